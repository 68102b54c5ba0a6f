"""Wallet truth: which passes are really in wallets, and whether the balances PassKit shows
are the ledger's (sweeps of PassKit's lists, webhook-rung re-reads)."""
