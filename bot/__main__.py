"""`python -m bot` / `orch-bot`: read the config, connect to Discord, run until stopped.

The config comes from --config PATH, else ORCH_CONFIG, else ./config.toml; the token only from the
environment variable DISCORD_TOKEN (never from a file, never logged). A start-up problem (no token, a
rejected token, a bad config) prints one line on stderr and exits with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import aiohttp
import discord

from orchestration.config import load_config
from orchestration.errors import ConfigError

from .client import create_bot

EXIT_SETUP = 2


class SetupFailed(Exception):
    """A start-up problem a person fixes: shown as one line."""


def _fail(message: str) -> int:
    print(f"orch-bot: {message}", file=sys.stderr)
    return EXIT_SETUP


def configure_logging() -> None:
    logging.basicConfig(level=os.environ.get("ORCH_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("discord").setLevel(logging.WARNING)  # its gateway chatter is not ours to show
    # The bot has no voice features: the warnings about missing voice libraries only confuse.
    logging.getLogger("discord.client").addFilter(lambda record: "voice will NOT be supported" not in record.getMessage())


async def run(config, token: str) -> None:
    bot = create_bot(config)
    async with bot:
        try:
            await bot.start(token)
        except discord.LoginFailure:
            raise SetupFailed("Discord rejected the token in DISCORD_TOKEN; copy it again from the "
                              "Developer Portal (Bot > Reset Token).") from None
        except discord.PrivilegedIntentsRequired:
            raise SetupFailed("the Message Content intent is not enabled for this application; turn it on in "
                              "the Developer Portal (Bot > Privileged Gateway Intents).") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise SetupFailed(f"cannot reach Discord ({type(exc).__name__}); check the network.") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orch-bot", description="Discord front-end of the Scrum orchestrator.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $ORCH_CONFIG, else ./config.toml)")
    args = parser.parse_args(argv)
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        return _fail("DISCORD_TOKEN is not set; export the bot token from the Discord Developer Portal.")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(f"config: {exc}")
    configure_logging()
    try:
        asyncio.run(run(config, token))
    except SetupFailed as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
