"""`loyaltyd check`: the set-up verified against the live PassKit account, one step a line.

It reads; the only thing it writes is one field of the test pass (its message field when it
has one), with the value that field already holds: nothing changes, nothing alerts. Optional
steps: the template's change message, and one Messages API message sent to the test pass
(which the user asked for by giving its text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from daemon.core.config import Settings
from daemon.core.errors import PassKitError, PermanentPassKitError, Unauthorized
from daemon.passkit import routes
from daemon.passkit.client import JsonObject, PassKitClient

# PassKit's data clusters (passkit-api.md §1): an account lives in exactly one.
REGION_HOSTS: Final = {
    "https://api.pub1.passkit.io": "pub1 (Europe)",
    "https://api.pub2.passkit.io": "pub2 (USA)",
}


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


@dataclass(frozen=True, slots=True)
class CheckRequest:
    pass_id: str
    protocol: str = "MEMBERSHIP"
    program_id: str | None = None  # default: the test pass's own
    tier_id: str | None = None
    template: bool = False
    message: str | None = None  # a Messages API message to send to the test pass


async def run_check(
    settings: Settings, request: CheckRequest, *, regions: Sequence[str] | None = None
) -> list[Step]:
    """Every step that could run, in order; stops early only when nothing further can be
    known (no token accepted, no test pass)."""
    steps: list[Step] = []
    async with PassKitClient(settings) as client:
        found = await _token_and_region(client, settings, request, regions, steps)
        if found is None:
            return steps
        tier = None
        if request.protocol == "MEMBERSHIP":
            tier = await _program_and_tier(client, request, found, steps)
        await _partial_metadata(client, settings, request, found, steps)
        if request.template:
            await _template(client, settings, tier, steps)
        if request.message:
            await _try_message(client, request, steps)
    return steps


async def _token_and_region(
    client: PassKitClient,
    settings: Settings,
    request: CheckRequest,
    regions: Sequence[str] | None,
    steps: list[Step],
) -> JsonObject | None:
    read = routes.message_routes(request.protocol).read
    base = settings.passkit_base_url
    try:
        found = await client.get(read, request.pass_id)
    except Unauthorized:
        elsewhere = await _found_elsewhere(settings, request, regions)
        if elsewhere:
            steps.append(Step("token", True, f"accepted at {elsewhere}"))
            steps.append(_wrong_region(base, elsewhere))
        else:
            steps.append(
                Step(
                    "token",
                    False,
                    f"PassKit at {base} refused the token signed with PASSKIT_API_KEY and "
                    "PASSKIT_API_SECRET: copy both again from the portal (Developer Tools, "
                    "REST credentials), and check PASSKIT_BASE_URL is your account's region",
                )
            )
        return None
    except PermanentPassKitError as exc:
        if exc.status != 404:
            steps.append(Step("token", False, str(exc)))
            return None
        steps.append(Step("token", True, f"PassKit at {base} accepted it"))
        elsewhere = await _found_elsewhere(settings, request, regions)
        if elsewhere:
            steps.append(_wrong_region(base, elsewhere))
        else:
            steps.append(
                Step(
                    "test pass",
                    False,
                    f"no {request.protocol} pass {request.pass_id} on this account: give the "
                    "PassKit id of a pass of yours (--pass-id, --protocol)",
                )
            )
        return None
    except PassKitError as exc:
        steps.append(Step("token", False, f"PassKit at {base} did not answer: {exc}"))
        return None
    steps.append(Step("token", True, f"PassKit at {base} accepted it"))
    steps.append(Step("region", True, f"{_region_name(base)}: the test pass is on this host"))
    return found


async def _found_elsewhere(
    settings: Settings, request: CheckRequest, regions: Sequence[str] | None
) -> str | None:
    """The other region host that has the test pass, if one does."""
    read = routes.message_routes(request.protocol).read
    for host in regions if regions is not None else REGION_HOSTS:
        if host == settings.passkit_base_url:
            continue
        moved = settings.model_copy(update={"passkit_base_url": host})
        try:
            async with PassKitClient(moved) as client:
                await client.get(read, request.pass_id)
        except PassKitError:
            continue
        return host
    return None


def _wrong_region(base: str, elsewhere: str) -> Step:
    return Step(
        "region",
        False,
        f"the test pass is at {elsewhere} ({_region_name(elsewhere)}), not at {base}: "
        f"set PASSKIT_BASE_URL={elsewhere}",
    )


def _region_name(host: str) -> str:
    return REGION_HOSTS.get(host, "a host that is not one of PassKit's regions")


async def _program_and_tier(
    client: PassKitClient, request: CheckRequest, member: JsonObject, steps: list[Step]
) -> JsonObject | None:
    """The tier, as PassKit holds it, when the program and the tier exist."""
    program = request.program_id or _text(member.get("programId"))
    tier = request.tier_id or _text(member.get("tierId"))
    if not program:
        steps.append(Step("program", False, "no program id given, and the test pass has none"))
        return None
    try:
        found = await client.get(routes.GET_PROGRAM, program)
        steps.append(Step("program", True, f"{program} ({_text(found.get('name')) or 'no name'})"))
    except PassKitError as exc:
        steps.append(Step("program", False, f"{program}: {exc}; check programs.passkit_program_id"))
        return None
    if not tier:
        steps.append(Step("tier", False, "no tier id given, and the test pass has none"))
        return None
    try:
        held = await client.get(routes.GET_TIER, program, tier)
    except PassKitError as exc:
        steps.append(Step("tier", False, f"{tier}: {exc}; check programs.passkit_tier_id"))
        return None
    steps.append(Step("tier", True, f"{tier} in program {program}"))
    return held


async def _partial_metadata(
    client: PassKitClient,
    settings: Settings,
    request: CheckRequest,
    current: JsonObject,
    steps: list[Step],
) -> None:
    """Writes one field alone, the message field if the pass holds one, with the value it
    already has (nothing changes, nothing alerts), and reads the pass back: are the fields
    not written still there?"""
    field = settings.passkit_message_field
    endpoints = routes.message_routes(request.protocol)
    before = _metadata(current)
    written = field if before.get(field) else next(iter(before), None)
    others = {k: v for k, v in before.items() if k != written}
    if written is None or not others:
        steps.append(
            Step(
                "metaData",
                False,
                "the test pass needs two metaData fields for the check to tell whether "
                "PassKit keeps the fields an update leaves out; it cannot tell with "
                f"{len(before)}: give it another (any key) and run again",
            )
        )
        return
    partial = {written: before[written]}
    body = routes.message_update_body(request.protocol, request.pass_id, partial, None)
    try:
        await client.send(endpoints.write, body, subject=request.pass_id)
        after = _metadata(await client.get(endpoints.read, request.pass_id))
    except PassKitError as exc:
        steps.append(Step("metaData", False, f"the partial write failed: {exc}"))
        return
    lost = sorted(k for k in others if after.get(k) != others[k])
    if not lost:
        steps.append(
            Step(
                "metaData",
                True,
                f"PassKit merges a partial map ({len(others)} other field(s) kept): "
                "PASSKIT_METADATA_MODE=merge is safe on this account (one request a message "
                "instead of two)",
            )
        )
        return
    restored = await _restore(client, request, {**after, **before})
    safe = settings.passkit_metadata_mode == "read_modify_write"
    advice = (
        "keep PASSKIT_METADATA_MODE=read_modify_write"
        if safe
        else "set PASSKIT_METADATA_MODE=read_modify_write before sending anything"
    )
    steps.append(
        Step(
            "metaData",
            safe,
            f"PassKit REPLACES a partial map: it wiped {', '.join(lost)} ({restored}); {advice}",
        )
    )


async def _restore(client: PassKitClient, request: CheckRequest, metadata: JsonObject) -> str:
    write = routes.message_routes(request.protocol).write
    body = routes.message_update_body(request.protocol, request.pass_id, metadata, None)
    try:
        await client.send(write, body, subject=request.pass_id)
    except PassKitError as exc:
        return f"restoring them failed: {exc}"
    return "restored"


async def _template(
    client: PassKitClient, settings: Settings, tier: JsonObject | None, steps: list[Step]
) -> None:
    """The tier's template has the message field with a %@ change message."""
    name = f"meta.{settings.passkit_message_field}"
    if tier is None:
        steps.append(Step("template", False, "checked for a membership pass whose tier exists"))
        return
    template_id = _text(tier.get("passTemplateId"))
    try:
        template = await client.get(routes.GET_TEMPLATE, template_id) if template_id else {}
    except PassKitError as exc:
        steps.append(Step("template", False, f"cannot read the tier's template: {exc}"))
        return
    data = template.get("data")
    fields = data.get("dataFields") if isinstance(data, dict) else None
    for entry in fields if isinstance(fields, list) else []:
        if not isinstance(entry, dict) or entry.get("uniqueName") != name:
            continue
        options = entry.get("appleWalletFieldRenderOptions")
        change = _text(options.get("changeMessage")) if isinstance(options, dict) else ""
        if "%@" in change:
            steps.append(Step("template", True, f"{name} has the change message {change!r}"))
        else:
            steps.append(
                Step(
                    "template",
                    False,
                    f"{name} is on template {template_id} without a %@ change message: set its "
                    "Apple lock screen message to %@, or nobody is alerted",
                )
            )
        return
    steps.append(
        Step(
            "template",
            False,
            f"template {template_id or '(none)'} has no field {name}: add one (Apple lock "
            "screen message %@) to show campaign messages",
        )
    )


async def _try_message(client: PassKitClient, request: CheckRequest, steps: list[Step]) -> None:
    assert request.message is not None
    try:
        message_id = await client.create_message("loyaltyd check", request.message)
        count = await client.send_message(message_id, [request.pass_id])
    except PassKitError as exc:
        steps.append(Step("messages api", False, f"{exc}"))
        return
    steps.append(
        Step(
            "messages api",
            count == 1,
            f"message {message_id} sent to the test pass (count {count}); look at the phone: "
            "whether a Messages API message alerts on the lock screen is not verified",
        )
    )


def _metadata(found: JsonObject) -> dict[str, str]:
    value = found.get("metaData")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
