"""The MovR domain: tables, rules and errors, free of I/O."""
