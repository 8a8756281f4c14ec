"""huabu.cluster."""
