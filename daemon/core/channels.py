"""The NOTIFY channels: the doorbells the triggers and statements ring and the listener hears.
Named here once; the SQL that rings them (migrations' triggers, daemon/store/queries) is
checked against this list by tests/core/test_channels.py."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    SYNCS = "loyaltyd_syncs"  # a pass owes PassKit something (pass_syncs)
    CAMPAIGNS = "loyaltyd_campaigns"  # a campaign to plan, count, start or finish
    DELIVERIES = "loyaltyd_deliveries"  # campaign recipients to send, pass by pass
    CAMPAIGN_MESSAGES = "loyaltyd_campaign_messages"  # recipients sent through the Messages API
    WALLET_EVENTS = "loyaltyd_wallet_events"  # passes a PassKit webhook named, to read again
