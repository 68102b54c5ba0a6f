"""One module per `loyaltyd` subcommand (see daemon.cli.main)."""
