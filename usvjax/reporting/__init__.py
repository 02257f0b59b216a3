"""What runs leave for people: plots, report files, tables, provenance."""
