"""Loading experiment configs (`experiments/FILE.py:ARG`) and checking command-line overrides.

Configs are locked ml_collections.ConfigDicts: a key that does not exist is an error naming it.
"""
from __future__ import annotations

import importlib.util
import pathlib

import ml_collections


# The checkout this package was imported from: `experiments/...` resolves here from any directory.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
  """A config file or override that cannot be used; the message says what was expected."""


def find_config_file(path: str) -> pathlib.Path:
  """`path`, or for a relative path not found from here, the same path under REPO_ROOT."""
  file = pathlib.Path(path)
  if file.is_file():
    return file
  if not file.is_absolute() and (REPO_ROOT / file).is_file():
    return REPO_ROOT / file
  raise ConfigError(f'config file {path!r} not found here or under {REPO_ROOT} (expected e.g. '
                    '--config=experiments/quickstart.py or experiments/quickstart.py:TASK)')


def split_config_spec(spec: str) -> tuple[str, str | None]:
  """'experiments/dmc.py:cartpole-swingup' -> ('experiments/dmc.py', 'cartpole-swingup')."""
  path, sep, arg = spec.partition('.py:')
  return (path + '.py', arg) if sep else (spec, None)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports the config file and calls its get_config(arg); the result is locked."""
  path, arg = split_config_spec(spec)
  file = find_config_file(path)
  module_spec = importlib.util.spec_from_file_location(f'_viper_config_{file.stem}', file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path} defines no get_config(arg)')
  config = module.get_config(arg) if arg is not None else module.get_config()
  config.lock()
  return config


def check_key(config: ml_collections.ConfigDict, dotted_key: str) -> None:
  """Raises ConfigError naming `dotted_key` (and the valid keys at that level) if it is unknown."""
  node, walked = config, []
  for part in dotted_key.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      where = '.'.join(walked) or '<top level>'
      valid = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
      raise ConfigError(f'unknown config key {dotted_key!r}: {where} has no field {part!r}. '
                        f'Valid keys there: {", ".join(valid) or "(none: it is a value)"}')
    node = node[part]
    walked.append(part)


def override_keys(argv: list[str], flag: str = 'config') -> list[str]:
  """Dotted keys of `--config.a.b=v` / `--config.a.b v` arguments in argv."""
  prefix = f'--{flag}.'
  return [arg[len(prefix):].split('=', 1)[0] for arg in argv if arg.startswith(prefix)]


def _config_arg(argv: list[str], flag: str) -> tuple[int, str] | None:
  """(index of the argument holding `--flag`'s value, the text before the value in it) or None."""
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{flag}='):
      return i, f'--{flag}='
    if arg == f'--{flag}' and i + 1 < len(argv):
      return i + 1, ''
  return None


def config_spec_from_argv(argv: list[str], flag: str = 'config') -> str | None:
  found = _config_arg(argv, flag)
  return None if found is None else argv[found[0]][len(found[1]):]


def resolve_config_in_argv(argv: list[str], flag: str = 'config') -> list[str]:
  """argv with its `--flag` config path as find_config_file finds it (from any directory);
  unchanged when there is none or it is not found (the flag's loader then reports it)."""
  found = _config_arg(argv, flag)
  if found is None:
    return argv
  index, prefix = found
  path, arg = split_config_spec(argv[index][len(prefix):])
  try:
    path = str(find_config_file(path))
  except ConfigError:
    return argv
  return [*argv[:index], prefix + path + ('' if arg is None else f':{arg}'), *argv[index + 1:]]


def check_overrides(argv: list[str], flag: str = 'config') -> None:
  """Validates every `--config.x.y` override in argv against the config file they apply to."""
  keys = override_keys(argv, flag)
  if not keys:
    return
  spec = config_spec_from_argv(argv, flag)
  if spec is None:
    raise ConfigError(f'--{flag}.{keys[0]} given without --{flag}=FILE.py[:ARG]')
  config = load_config(spec)
  for key in keys:
    check_key(config, key)

