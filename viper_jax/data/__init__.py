"""Episodes, the episode store, policies (scripted experts, random) and collection."""
