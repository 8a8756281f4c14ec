"""huabu.ab_testing."""
