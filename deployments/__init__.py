"""huabu.deployments."""
