"""viper_jax: Video Prediction Models as Rewards for RL, in JAX/Flax."""
import setuptools

setuptools.setup(
    name='viper_jax',
    version='0.1.0',
    description='VIPER (video prediction rewards) in JAX/Flax: tokenizer, video prior, '
                'likelihood reward, DreamerV3 agent',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['viper_jax', 'viper_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.4.35,<0.13',
        'flax>=0.10,<0.13',
        'optax>=0.2.3,<0.3',
        'chex>=0.1.87,<0.2',
        'orbax-checkpoint>=0.9,<0.13',
        'dm_control>=1.0.20,<1.1',
        'mujoco>=3.17,<4',  # mujoco 4 breaks dm_control 1.0.x (flex_vertedge)
        'gymnasium>=1.0,<1.5',
        'ale-py>=0.10,<0.13',  # ships the Atari ROMs
        'ml_collections>=0.1.1,<2',
        'absl-py>=2.0,<3',
        'etils[epath]>=1.7,<2',
        'numpy>=1.26,<3',
        'pillow>=10,<14',
        'imageio>=2.34,<3',
        'imageio-ffmpeg>=0.5,<1',  # mp4 videos (ships its own ffmpeg binary)
        'matplotlib>=3.8,<4',
        'tqdm>=4.66,<5',
        'tensorboardX>=2.6,<3',
        'grain>=0.2.2,<0.3',
    ],
    extras_require={
        'test': ['pytest>=8,<10', 'pytest-xdist>=3.5,<4'],
    },
    entry_points={'console_scripts': ['viper=viper_jax.cli:console_main']},
)
