"""loyaltyd: the wallet-pass engine (Postgres rows in, PassKit wallet updates out)."""
