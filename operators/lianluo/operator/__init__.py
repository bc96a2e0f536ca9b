"""The cell operator: places Tenants in Cells, clones Cells from a template, provisions tenants."""
