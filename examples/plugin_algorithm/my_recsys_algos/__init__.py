"""A user's own recsys_exp algorithms, kept outside the recsys_exp package.

``plugins.py`` holds the light plugin classes named by ``_target_`` in ``conf/algo/*.yaml``;
``click_logit.py`` the RLlib pieces (imported only when a run is built).
"""
