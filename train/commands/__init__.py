"""One module per `tokgen` command (see train/cli.py): each parses its flags into a typed config and
calls one library function of `tokgen.train.jobs`; no command imports another.  The flags that
two commands share live in `options.py`, `generator_flags.py` and `compare_flags.py`, and
`config_file.py` reads `--config FILE`."""
