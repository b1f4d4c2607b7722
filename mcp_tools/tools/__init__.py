"""The curated tools, one module per concern; `profiles` decides which are listed."""
