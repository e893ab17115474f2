"""`featcache` command line: the entry point. Each group of commands lives in featcache/commands/ and
only parses arguments and calls the library."""

from __future__ import annotations

import sys

import click

from featcache.commands import demo, extract, finetune, generative, heads, reports, score
from featcache.commands.common import Commands
from featcache.commands.examples import attach


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featcache")
def main() -> None:
    """BLIP-2 features cached once, classifiers trained in seconds."""


for commands in (extract, heads, reports, finetune, generative, score, demo):
    commands.register(main)
attach(main)  # each command's --help ends with examples (featcache/commands/examples.py)


if __name__ == "__main__":
    sys.exit(main())
