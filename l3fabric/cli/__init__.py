"""The `l3fabric` command line: main builds the parser from one module per
command group (each with a `register(subparsers)`) and runs the command."""
