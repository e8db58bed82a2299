"""One module per suite; each defines ``run(args) -> list[Row]``."""
