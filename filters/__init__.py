"""huabu.filters."""
