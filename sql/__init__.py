"""The migrations, shipped inside the package as `daemon.migrations` (see pyproject.toml)."""
