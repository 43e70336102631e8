"""The paper's ablations as named sweeps over config fields.

Each sweep: a base experiment config (file:ARG), the stages every run goes through (`viper`
commands, in order), and axes {dotted config field: values}. The runs are the product of the
axes' values. `launch/sweep.py --sweep=NAME` expands and runs them (one workdir each);
`launch/sweep.py --list` names them.

Video-model sweeps stop after `reward-check` (held-out expert vs noisy vs random reward, the
paper's likelihood-vs-return evidence); agent sweeps go on to `train-agent`.
"""
VIDEO_STAGES = ('collect', 'train-tokenizer', 'train-prior', 'reward-check')
AGENT_STAGES = VIDEO_STAGES + ('train-agent',)

SWEEPS = {
    'context': dict(
        description='frames of context the prior sees (paper: 16 for DMC)',
        base='experiments/dmc.py:cartpole-swingup', stages=VIDEO_STAGES,
        axes={'prior.context': (4, 8, 16)}, tie={'prior.train.window': 'prior.context'}),
    'code_grid': dict(
        description='8x8 vs 16x16 codes per 64x64 frame',
        base='experiments/dmc.py:cartpole-swingup', stages=VIDEO_STAGES,
        axes={'tokenizer.channel_mult': ((1, 2, 2, 2), (1, 2, 2))}),
    'frame_skip': dict(
        description='frame skip 1/2/4 with context 16/8/4 (the same time span)',
        base='experiments/dmc.py:cartpole-swingup', stages=VIDEO_STAGES,
        axes={'prior.frame_skip': (1, 2, 4)},
        zip_axes={'prior.context': (16, 8, 4), 'prior.train.window': (16, 8, 4)}),
    'exploration': dict(
        description='weight of the Plan2Explore disagreement bonus next to the VIPER reward',
        base='experiments/dmc.py:cartpole-swingup', stages=AGENT_STAGES,
        axes={'agent.reward_weights.disag': (0.0, 0.1, 1.0)}),
    'score_mask': dict(
        description='Atari score regions masked or not (tokenizer, prior and reward)',
        base='experiments/atari.py:pong', stages=VIDEO_STAGES,
        axes={'data.mask_score': (True, False)}),
    'task_conditioning': dict(
        description='one task-conditioned model for all DMC tasks vs an unconditioned one',
        base='experiments/dmc.py:all', stages=VIDEO_STAGES,
        axes={'prior.task_conditioning': (True, False)}),
    'prior_kind': dict(
        description='autoregressive vs MaskGIT prior, scored through the same reward API',
        base='experiments/dmc.py:cartpole-swingup', stages=VIDEO_STAGES,
        axes={'prior.kind': ('ar', 'maskgit')}),
    'likelihood': dict(
        description='conditional log p(x_t | past) vs the joint over the context window',
        base='experiments/dmc.py:cartpole-swingup', stages=AGENT_STAGES,
        axes={'reward.likelihood': ('conditional', 'joint')}),
    # A seconds-long sweep for the test suite and for trying the launcher out.
    'tiny': dict(
        description='two tiny quickstart runs (tests and trying the launcher)',
        base='experiments/quickstart.py:dmc:cartpole-balance', stages=VIDEO_STAGES,
        axes={'prior.context': (2, 3)}, tie={'prior.train.window': 'prior.context'},
        overrides={
            'env.size': (16, 16), 'env.time_limit': 12, 'collect.train_episodes': 2,
            'collect.test_episodes': 1, 'collect.test_noise_levels': (0.0, 0.5),
            'collect.random_test_episodes': 1, 'collect.workers': 1,
            'tokenizer.channels': 8, 'tokenizer.channel_mult': (1, 2), 'tokenizer.codebook_size': 16,
            'tokenizer.code_dim': 4, 'tokenizer.attention_in_middle': False,
            'tokenizer.train.steps': 3, 'tokenizer.train.batch_size': 4,
            'prior.num_layers': 1, 'prior.width': 16, 'prior.num_heads': 2, 'prior.mlp_dim': 32,
            'prior.train.steps': 3, 'prior.train.batch_size': 4}),
}
