"""Checks of an OpenAI-compatible endpoint setting (URL, key variable), stdlib only, so config validation
refuses a bad or leaking setting before Snakemake records it, without importing the scoring stack."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
"""What `api_key_env` must look like: an environment variable name (letters, digits, underscores; ≤ 64)."""
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "ghp_", "gho_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "AIza",
                 "gsk_", "key-", "Bearer")


def redact(value: str) -> str:
    """A secret-shaped value as it may appear in a message or log: its first 3 characters and its length."""
    return f"{value[:3]}… ({len(value)} characters)"


def looks_like_secret(name: str) -> bool:
    """Whether an `api_key_env` value looks like an API key pasted in place of the variable's name.

    Variable names are short words in capitals (OPENAI_API_KEY); keys are long, mixed-case and digit-laden, or
    carry a vendor prefix (sk-, hf_, ghp_, ...).
    """
    if name.startswith(_KEY_PREFIXES) or "-" in name or len(name) > 64:
        return True
    lower, upper, digits = (sum(map(f, name)) for f in (str.islower, str.isupper, str.isdigit))
    return len(name) >= 24 and lower > 0 and upper > 0 and digits >= 4


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (localhost or a loopback address): the key never leaves it."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_errors(base_url: str, api_key_env: str = "", allow_plain_http_key: bool = False) -> list[str]:
    """What is wrong with an OpenAI-compatible endpoint setting, as '<key> = <value>: <what is allowed>' lines.

    http(s) only, a host, no credentials in the URL; the bearer key (when `api_key_env` is set) goes only over
    https or to loopback, unless `allow_plain_http_key` says so; `api_key_env` is a variable name, never a key.
    """
    errors = []
    if api_key_env and looks_like_secret(api_key_env):
        errors.append(f"api_key_env = {redact(api_key_env)}: looks like an API key, not the name of the environment "
                      "variable holding one; never paste a key into a config file (it would be recorded): export "
                      "it, e.g. `export OPENAI_API_KEY=...`, and set api_key_env: OPENAI_API_KEY")
    elif api_key_env and not ENV_NAME.match(api_key_env):
        errors.append(f"api_key_env = {api_key_env!r}: must be an environment variable name (letters, digits, "
                      "underscores, not starting with a digit, at most 64)")
    if not base_url:
        return errors
    try:
        parts = urllib.parse.urlsplit(base_url)
        host = parts.hostname or ""
    except ValueError as err:
        return errors + [f"base_url = {base_url!r}: not a URL ({err})"]
    if parts.scheme not in ("http", "https"):
        errors.append(f"base_url = {base_url!r}: scheme {parts.scheme!r} is not allowed; use http:// or https://")
    elif not host:
        errors.append(f"base_url = {base_url!r}: has no host; e.g. http://127.0.0.1:8000/v1")
    elif parts.username or parts.password:
        errors.append(f"base_url = {parts.scheme}://…@{host}: holds credentials, which would be recorded; put the key "
                      "in an environment variable named by api_key_env")
    elif parts.scheme == "http" and api_key_env and not is_loopback(host) and not allow_plain_http_key:
        errors.append(f"base_url = {base_url!r}: plain http to {host}, a host other than this machine, would send "
                      f"the key in ${api_key_env} unencrypted; use https, a loopback server, or set "
                      "allow_plain_http_key: true (a trusted network)")
    return errors
