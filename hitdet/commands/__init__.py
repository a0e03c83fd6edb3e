"""One module per ``hitdet`` subcommand; each defines ``register(subparsers)``."""
