"""Domain values: frozen, typed records the store takes and returns and the layers above work
with, so no layer copies fields into tuples or dicts. Pure: no I/O."""
