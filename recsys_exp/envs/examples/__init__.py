"""Small gymnasium envs written without recsys_exp's parts, for ``env=gym`` (see docs/envs.md)."""
