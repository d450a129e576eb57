"""The training command in this process, where it stops before defining its flags; the runs themselves
(subprocesses) are in test_train, test_cli and test_distributed."""
from conftest import assert_one_error_line

from vdsr_jax import train


def test_an_unknown_config_is_one_error_line_naming_the_installed_ones(capsys):
    status = train.main(["--config", "missing_config.py", "--workdir", "unused"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert_one_error_line(status, lines, "--config missing_config.py: no such file", "x234, x234_long")
    assert status == 1
