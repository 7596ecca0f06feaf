"""Result schema (the contract), collation into tables, and reports."""
