"""Click commands, one module per command group; each parses options, calls the library once, and prints."""
