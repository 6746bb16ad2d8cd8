"""Whether a name (of a flag, a variable, a property, a header, a query
parameter) says that its value is a secret, in any spelling.

A name is cut into words at case changes and at anything not a letter or a
digit (`--db-pass`, `DB_PASSWORD`, `keyStorePassword`,
`-Dspring.datasource.password`, `X-Amz-Signature`). Its last word decides,
because qualifiers come last: `--password` is a secret, `--password-file`,
`--token-ttl`, `--secret-name` and `--max-tokens` are not. A name with a
leading word that makes it a switch (`--ask-pass`, `--no-password`,
`-DENABLE_TOKEN_AUTH`) is not one either. The keyword list follows
detect-secrets' KeywordDetector (Yelp, Apache-2.0) and adds the words that
command-line tools use (passphrase, passin, storepass, bearer, psk...).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

# Words that name a secret when they end a name.
_LAST: Final = frozenset({
    "password", "passwd", "pass", "pwd", "pw", "passphrase", "passcode", "secret",
    "token", "credentials", "creds", "apikey", "auth", "authorization", "bearer", "psk",
    "passin", "passout",
})
# `<prefix> key` is a secret for these prefixes (api key, secret key, ...); `key`
# alone is not (curl --key, gpg --recv-keys name files and ids).
_KEY_PREFIXES: Final = frozenset({
    "api", "access", "secret", "private", "priv", "client", "account", "service", "auth",
    "master", "signing", "sign", "encryption", "enc", "storage", "app", "application",
    "license", "db", "database", "shared", "session", "consumer", "customer", "hmac",
    "admin", "root", "registration", "subscription", "webhook", "jwt",
})
# Words glued to a secret word without a separator: storepass, requirepass,
# authtoken, clientsecret, dbpassword...
_GLUED_ENDS: Final = ("password", "passwd", "passphrase", "secret", "token", "pass", "pwd",
                      "auth")
_NOT_GLUED: Final = frozenset({"bypass", "compass", "surpass", "trespass", "overpass",
                               "underpass", "askpass", "oauth", "impass"})
# A leading word that makes the name a switch or a limit, not a holder of a secret.
_SWITCH_WORDS: Final = frozenset({
    "ask", "no", "without", "skip", "prompt", "use", "show", "print", "allow", "enable",
    "enabled", "disable", "disabled", "require", "required", "generate", "gen", "random",
    "save", "forget", "with", "read", "has", "is", "max", "min", "num", "check", "verify",
    "validate", "expire", "insecure",
})
# Query parameters and authorization parameters also name signatures.
_QUERY_LAST: Final = frozenset({"sig", "signature"})

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_words(name: str) -> list[str]:
    """`--keyStorePassword` -> ["key", "store", "password"]."""
    return [w.lower() for w in _WORDS.findall(name)]


def _secret_word(word: str) -> bool:
    if word in _LAST:
        return True
    if word in _NOT_GLUED:
        return False
    for end in _GLUED_ENDS:
        if word.endswith(end) and len(word) - len(end) >= 2:
            return True
    return word.endswith("key") and word[:-3] in _KEY_PREFIXES


@lru_cache(maxsize=4096)
def is_secret_name(name: str, query: bool = False) -> bool:
    """Whether a value under this name is a secret (`query`: a URL query or
    authorization parameter, where signatures count too)."""
    words = name_words(name)
    if not words:
        return False
    if any(w in _SWITCH_WORDS for w in words[:-1]):
        return False
    last = words[-1]
    if _secret_word(last) or (query and last in _QUERY_LAST):
        return True
    if len(words) > 1:
        before = words[-2]
        if last == "key":
            return before in _KEY_PREFIXES
        if last in ("string", "binary"):  # aws --secret-string
            return before == "secret"
    return False


@lru_cache(maxsize=1024)
def is_secret_on_stdin(name: str) -> bool:
    """`--password-stdin`, `--passphrase-fd`, `--with-token`: the secret comes
    on standard input (so an `echo X |` before it gives it away)."""
    words = name_words(name)
    if words[-1:] == ["token"] and words[:1] == ["with"]:
        return True
    return len(words) > 1 and words[-1] in ("stdin", "fd") and any(
        _secret_word(w) for w in words[:-1])
