"""DreamerV3 agent with pluggable rewards: env, VIPER (injected likelihood_fn), +disag, AMP.

Importing the package stays light (configs only), so experiment configs can use `agent_config`
without pulling in environments. `viper_jax.agent.policy.load_policy` builds the policy of
`viper collect --config.collect.policy=agent:<workdir>/agent/checkpoints`; the pipeline hands it
to the data layer (which never imports the agent).
"""
from __future__ import annotations

from viper_jax.agent.configs import agent_config  # noqa: F401
