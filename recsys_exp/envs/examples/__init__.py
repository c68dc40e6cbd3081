"""Small gymnasium envs written without recsys_exp's parts, for ``env=gym`` (see the README)."""
