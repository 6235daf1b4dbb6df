"""Sans-IO protocol code: no trio import anywhere below this package."""
