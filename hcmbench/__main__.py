"""`python -m hcmbench` runs the CLI."""

from hcmbench.cli import main

main()
