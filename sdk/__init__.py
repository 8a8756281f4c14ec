"""huabu.sdk."""
