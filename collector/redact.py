"""Secrets in command lines are replaced by "***" before events leave the host.

On by default. Each argument keeps its place (argv keeps its length) and
only the secret part of it is masked (`--password=***`, `-p***`,
`https://bob:***@host`, `Authorization: Bearer ***`). What counts as a secret:

- the value of anything whose name says secret, password, token, key,
  auth, credential or passphrase in any spelling (collector/redact_names.py):
  flags (`--db-pass X`, `-passin pass:X`, `--oauth2-bearer X`),
  assignments (`PASSWORD=X`, `-Dspring.datasource.password=X`,
  `--set auth.rootPassword=X`, `mount -o user=u,password=X`), URL query and
  form parameters (`?access_token=X`, `&X-Amz-Signature=X`, `-d password=X`),
  headers (`-H 'Authorization: Bearer X'`, `PRIVATE-TOKEN: X`, `Cookie: s=X`),
  JSON pairs (`{"password": "X"}`), SQL (`IDENTIFIED BY 'X'`, `PASSWORD 'X'`)
  and `set NAME X` / `config NAME X` (aws configure set, git config, npm config);
- values with the shape of a secret wherever they are (collector/redact_values.py,
  from detect-secrets: AWS, GitHub, GitLab, Slack, Stripe, JWT, private keys...,
  and high-entropy base64), and credentials in URLs (`scheme://user:X@`,
  `https://TOKEN@`, `user:X@host`);
- what particular tools take as a secret without a name saying so
  (collector/redact_tools.py: `mysql -pX`, `sshpass -p X`, `curl -u user:X`,
  `smbclient -U user%X`, `ldapsearch -w X`, `vault login X`, `openssl -k X`...),
  and every value given to a secret store (`kubectl create secret
  --from-literal`, `gh secret set --body`, `az keyvault secret set --value`);
- the same behind wrappers (`sudo`, `env`, `nohup`, `timeout`, `xargs`,
  `ssh host cmd`, `docker exec`...): a tool's rules apply wherever it appears
  in argv, and command lines given as one argument (`sh -c "..."`, `ssh host
  "..."`, `watch "..."`) are split like a shell would and redacted the same
  way, recursively; `echo X | docker login --password-stdin` masks X.

Not masked: values that refer to a secret rather than hold one (a path,
`$VAR`, `env:NAME`, `file:PATH`, `-`), empty values, and hex strings with no
name before them (commit ids, digests).

argv is chosen by whoever runs the command: every expression here is linear
(shapes start with a literal so `re` can skip ahead), nothing is quadratic in
the number of arguments, and command lines inside arguments are walked for
at most SHELL_WORDS words per argv, the rest getting only the linear
per-argument rules (tests/bench/redaction.py prints the costliest shapes).

Configurable (`RedactConfig`): turn it off, or add regular expressions; in an
added pattern the group named `secret` is replaced, or the whole match if it
has none. An event whose argv (or parent_argv) was changed carries
`proc.argv_redacted: true`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from snoopbus.collector.redact_names import is_secret_name, is_secret_on_stdin, name_words
from snoopbus.collector.redact_tools import COMMANDS, PRINTERS, STDIN_READERS, TOOLS, Tool
from snoopbus.collector.redact_values import MASK, looks_like_token, mask_group, mask_shapes

__all__ = ["MASK", "RedactConfig", "Redactor"]

MIN_SECRET = 1  # empty values are kept (`ssh-keygen -N ''`)
MAX_DEPTH = 4  # command lines inside command lines (sh -c "ssh h 'sh -c ...'")
# Words of command lines inside arguments walked per argv. argv is chosen by
# whoever runs the command (8 KiB by default): past this, such an argument
# gets only the per-argument rules, which are linear, so that no argv costs
# the collector much more than the kernel spent making it.
SHELL_WORDS = 1024


class _Work:
    """What is left of one argv's budget of shell words."""

    __slots__ = ("words",)

    def __init__(self) -> None:
        self.words = SHELL_WORDS


@dataclass(frozen=True)
class RedactConfig:
    enabled: bool = True
    patterns: tuple[str, ...] = ()  # extra regular expressions (group `secret`, or all)

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"redact pattern {pattern!r} is not a regular expression ({exc}): "
                    "fix or remove it (--redact-pattern, [collector] redact_pattern)"
                ) from None


class Redactor:
    def __init__(self, config: RedactConfig = RedactConfig()) -> None:
        self.enabled = config.enabled
        self.extra = [re.compile(p) for p in config.patterns]

    def __call__(self, argv: Sequence[str]) -> list[str] | None:
        """A redacted copy of argv, or None when nothing in it is a secret."""
        if not self.enabled or not argv:
            return None
        out = list(argv)
        out[0] = _raw(out[0])
        _walk(out, 0, _Work())
        for pattern in self.extra:
            out = [pattern.sub(_mask_match, a) for a in out]
        return None if out == list(argv) else out


def _mask_match(m: re.Match[str]) -> str:
    return mask_group(m, "secret") if "secret" in m.re.groupindex else MASK


# How the value after a flag is masked (else: a separator, USER<sep>PASSWORD).
_PLAIN = "plain"
_COOKIES = "cookies"
_USER_COLON = "user:"  # `--creds user:X` keeps user; without a colon all is the secret
_USER = "user"  # -u/-U of a tool we do not know: `user%X` (samba), `user:X`
_PAIR_VALUE = "pair"  # the VALUE of a NAME VALUE pair (nmcli ... wifi-sec.psk X)
_CREDENTIAL = "credential"  # after `login`/`auth`/`unlock`, if it looks like one


@dataclass
class _Command:
    """What the walk knows about the command it is in."""

    args: list[str]
    work: _Work
    tool: Tool | None = None
    pending: str | None = None  # the next argument is a secret: _PLAIN, _COOKIES or a separator
    shell_next: bool = False  # the next argument is a command line (after -c)
    port_like_ok: bool = False  # a pending -p keeps a value that looks like ports
    login: bool = False  # after login/auth/unlock: the next positional may be a credential
    set_verb: bool = False  # after `set`/`config`: the next positional is a NAME
    anchor: str | None = None  # Tool.positional: the word positionals are counted from
    count: int = 0
    batch: bool = False  # Tool.batch_last seen
    last_positional: int = -1
    seen: set[str] = field(default_factory=set)
    _store: bool | None = None
    _user_flag: bool | None = None

    def switch(self, tool: Tool) -> None:
        self.tool, self.pending, self.shell_next, self.set_verb = tool, None, False, False
        self.anchor, self.count, self.batch = None, 0, False
        self.seen = set()

    def has_user_flag(self) -> bool:
        """-u/-U/--user anywhere in the command (computed once: argv is attacker-sized)."""
        if self._user_flag is None:
            self._user_flag = not _USER_FLAGS.isdisjoint(self.args)
        return self._user_flag

    def secret_store(self) -> bool:
        """`kubectl create secret`, `gh secret set`, `aws ssm put-parameter
        --type SecureString`: every value given is a secret."""
        if self._store is None:
            words = [a.lower() for a in self.args
                     if len(a) < 64 and a[:1] != "-" and "=" not in a]
            self._store = any(_STORE_NOUN.search(w) for w in words) and any(
                _STORE_VERB.search(w) for w in words)
        return self._store


_STORE_VERB = re.compile(r"(?:^|[-_:])(?:set|create|put|add|update|write)(?:$|[-_:])")
_STORE_NOUN = re.compile(r"(?:^|[-_:/])secrets?(?:manager)?(?:$|[-_:/])|^securestring$")
# In a secret store, these flags carry the value (--from-literal: NAME=VALUE).
_STORE_VALUES = frozenset({"--value", "--body", "-b", "--data", "--secret-binary",
                           "--from-literal", "--literal"})
_SET_VERBS = frozenset({"set", "config", "setenv", "set-env"})
_LOGIN_VERBS = frozenset({"login", "auth", "unlock", "authenticate"})
_USER_FLAGS = frozenset({"-u", "-U", "--user", "--username", "-user", "-username"})
_PASSWORD_FLAGS = frozenset({"-p", "-P"})
_ACTIONS = frozenset({"set", "add", "change", "update", "reset", "new", "put", "store"})
# Collections, named rather than given: `kubectl config set-credentials NAME`.
_NAMED = frozenset({"credentials", "creds", "secrets"})


def _verb(word: str) -> bool:
    """`set-initial-password`, `add-authtoken`: an action on a secret."""
    words = name_words(word)
    return len(words) > 1 and words[0] in _ACTIONS


def _walk(args: list[str], depth: int, work: _Work) -> None:
    """Masks, in place, the secrets of a command line (args[0] is the command)."""
    cmd = _Command(args, work)
    first = 0
    while first < len(args) and _ASSIGNMENT.match(args[first]):  # NAME=X cmd ...
        args[first] = _assignment(args[first], cmd, depth)
        first += 1
    if first < len(args):
        tool = TOOLS.get(args[first].rpartition("/")[2])
        if tool is not None:
            cmd.switch(tool)
    for i in range(first + 1, len(args)):
        arg = args[i]
        if cmd.pending is not None:
            how, cmd.pending = cmd.pending, None
            port_ok, cmd.port_like_ok = cmd.port_like_ok, False
            if arg and (arg[0] != "-" or len(arg) == 1) and not (
                    (how == _PAIR_VALUE and _DOTTED.fullmatch(arg))  # a NAME: no value came
                    or (port_ok and (_PORT_LIKE.fullmatch(arg) or "=" in arg))):
                args[i] = _raw(_mask_value(arg, how, cmd))
                continue
        if cmd.shell_next:
            cmd.shell_next = False
            args[i] = _shell(arg, depth + 1, work)
            continue
        tool = TOOLS.get(arg.rpartition("/")[2]) if ":" not in arg else None
        if tool is not None:  # a command behind a wrapper
            cmd.switch(tool)
        elif len(arg) > 1 and arg[0] == "-" and arg != "--" and " " not in arg:
            args[i] = _flag(arg, cmd, depth)
        elif arg != "--":
            args[i] = _positional(arg, i, cmd, depth)
    t = cmd.tool
    if t is not None and t.batch_last and cmd.batch and cmd.last_positional > first:
        args[cmd.last_positional] = MASK  # htpasswd -b FILE USER PASSWORD


def _flag(arg: str, cmd: _Command, depth: int) -> str:
    t = cmd.tool
    cmd.login = False  # `login X`: X comes right after the verb
    name, eq, value = arg.partition("=")
    if t is not None:
        if t.value_flags and (t.after is None or t.after in cmd.seen):
            if arg in t.value_flags:
                cmd.pending = _PLAIN
                return arg
            short = arg[:2]
            if t.attached and short in t.value_flags and arg[1] != "-":
                return short + _mask_value(arg[2:], _PLAIN, cmd)
        if t.attached_only and arg[:2] in t.attached_only and len(arg) > 2:
            return arg[:2] + _mask_value(arg[2:], _PLAIN, cmd)
        if arg in t.userpass:
            cmd.pending = t.sep
            return arg
        if eq and name in t.userpass:
            return name + eq + _mask_value(value, t.sep, cmd)
        if name in t.not_values:
            return arg
        if t.shell_flag and _C_FLAG.match(arg):
            cmd.shell_next = True
            return arg
        if t.batch_last and arg[1] != "-" and t.batch_last in arg:
            cmd.batch = True
        if arg in ("-b", "--cookie") and t is TOOLS["curl"]:
            cmd.pending = _COOKIES
            return arg
    if eq:
        prop = name[2:] if _PROPERTY.match(name) else name  # java -Dname=, gradle -Pname=
        if is_secret_name(prop) or (name in _STORE_VALUES and cmd.secret_store()):
            if name == "--from-literal":  # NAME=VALUE: all of VALUE
                key, eq2, lit = value.partition("=")
                return f"{name}={key}{eq2}{_mask_value(lit, _PLAIN, cmd)}"
            return name + eq + _raw(_mask_value(value, _how(prop), cmd))
        if _SPACE.search(value) and _looks_like_command(value):  # --command="mysql -pX"
            return name + eq + _shell(value, depth + 1, cmd.work)
        return name + eq + _raw(_pairs(value, cmd))
    if MASK in arg:  # already masked (--password*** is no flag name)
        return arg
    if is_secret_name(arg) or (arg in _STORE_VALUES and cmd.secret_store()):
        cmd.pending = _how(arg)
        return arg
    if arg in _PASSWORD_FLAGS and (t is None or not t.knows(arg)) and cmd.has_user_flag():
        cmd.pending = _PLAIN  # rabbitmqadmin -u admin -p X: -p is a port only with digits
        cmd.port_like_ok = True
        return arg
    if arg in _USER_FLAGS and t is None:
        cmd.pending = _USER
        return arg
    return _raw(arg)  # -----BEGIN PRIVATE KEY----- ...


def _positional(arg: str, i: int, cmd: _Command, depth: int) -> str:
    t = cmd.tool
    cmd.last_positional = i
    low = arg.lower()
    if t is None and not cmd.set_verb and not cmd.login and _PLAIN_WORD.fullmatch(arg):
        # the common case, kept cheap (argv is attacker-sized): only a verb can matter
        if low in _SET_VERBS:
            cmd.set_verb = True
        elif low in _LOGIN_VERBS:
            cmd.login = True
        return arg
    if len(arg) < 32:
        cmd.seen.add(low)
    if t is not None:
        if t.positional:
            if low in t.positional:
                cmd.anchor, cmd.count = low, 0
                return arg
            picks = t.positional.get(cmd.anchor)
            if picks is not None and (cmd.anchor is None or cmd.anchor in cmd.seen):
                n, cmd.count = cmd.count, cmd.count + 1
                if n in picks and "=" not in arg:
                    return _mask_value(arg, _PLAIN, cmd)
        if t.prefixed:
            for prefix in t.prefixed:
                if arg.startswith(prefix):
                    return prefix + _mask_value(arg[len(prefix):], _PLAIN, cmd)
        if t.slash_login:
            m = _SLASH_LOGIN.match(arg)
            if m:
                return m.group("user") + MASK + (m.group("rest") or "")
        if t.pairs and "=" not in arg and is_secret_name(arg):
            cmd.pending = _PAIR_VALUE
            return arg
    if cmd.set_verb and "=" not in arg:  # set NAME VALUE
        cmd.set_verb = low in _SET_VERBS
        if not cmd.set_verb and "=" not in arg and is_secret_name(arg) and not _verb(arg):
            cmd.pending = _PLAIN
        return arg
    if low in _SET_VERBS:
        cmd.set_verb = True
        return arg
    if cmd.login:
        cmd.login = False
        if "=" not in arg and _credential_like(arg):  # vault login X, bw unlock X
            return _mask_value(arg, _PLAIN, cmd)
    if low in _LOGIN_VERBS:
        cmd.login = True
        return arg
    if "=" in arg and _ASSIGNMENT.match(arg):
        return _raw(_assignment(arg, cmd, depth))
    if len(arg) < 48 and _IDENT.fullmatch(arg) and _verb(arg) and is_secret_name(arg) and (
            name_words(arg)[-1] not in _NAMED):
        cmd.pending = _CREDENTIAL  # set-initial-password X, add-authtoken X
        return arg
    if _SPACE.search(arg) and depth < MAX_DEPTH and (
            (t is not None and t.command_args) or _looks_like_command(arg)):
        arg = _shell(arg, depth + 1, cmd.work)
    return _raw(arg)


def _how(name: str) -> str:
    """How to mask the value of a secret-named flag: `--src-creds user:pw` keeps user."""
    last = name_words(name)[-1:]
    return _USER_COLON if last and last[0] in ("creds", "credentials", "auth") else _PLAIN


def _assignment(arg: str, cmd: _Command, depth: int) -> str:
    name, _, value = arg.partition("=")
    t = cmd.tool
    if is_secret_name(name) or (t is not None and name in t.secret_names):
        if not _STRUCTURED.search(value):
            return f"{name}={_mask_value(value, _how(name), cmd)}"
    elif cmd.secret_store():  # fly secrets set NAME=VALUE
        return f"{name}={_mask_value(value, _PLAIN, cmd)}"
    elif _SPACE.search(value) and depth < MAX_DEPTH and _looks_like_command(value):
        return f"{name}={_shell(value, depth + 1, cmd.work)}"  # ProxyCommand=sshpass -p X
    elif "=" not in value:
        return arg
    return _pairs(arg, cmd)


def _mask_value(value: str, how: str, cmd: _Command | None) -> str:
    if len(value) < MIN_SECRET or _is_reference(value):
        return value
    if how == _COOKIES:
        return _COOKIE_VALUE.sub(_mask_group2, value) if "=" in value else value
    if how == _USER_COLON:
        user, sep, password = value.partition(":")
        return user + sep + MASK if sep and password and "//" not in value else MASK
    if how == _USER:  # a user name, unless it carries a password
        user, sep, password = value.partition("%")
        if sep and password and not _HEX_ESCAPE.match(password):
            return user + sep + MASK
        user, sep, password = value.partition(":")
        return user + sep + MASK if sep and password and not password.isdigit() else value
    if how in (_CREDENTIAL, _PAIR_VALUE) and not _credential_like(value):
        return value
    if how != _PLAIN and how not in (_CREDENTIAL, _PAIR_VALUE):
        # USER<sep>PASSWORD; no separator: the tool prompts (curl -u user)
        user, sep, password = value.partition(how)
        if not sep:  # the tool prompts (curl -u user), unless it is a token (http -a TOKEN)
            return MASK if looks_like_token(value) else value
        if "//" in value or len(password) < MIN_SECRET:
            return value
        return user + sep + MASK
    if value.startswith("pass:"):  # openssl -pass pass:X
        return "pass:" + MASK
    if value.startswith("{") and _JSON_VALUE.search(value):
        return _JSON_VALUE.sub(lambda m: m.group(1) + MASK + m.group(3), value)
    if _STRUCTURED.search(value) and "=" in value.partition(",")[0]:
        return _pairs(value, cmd)  # docker build --secret id=x,src=path
    return MASK


def _is_reference(value: str) -> bool:
    """A path, `$VAR`, `env:NAME`, `file:PATH`, `-`: points at a secret (unless it
    has a secret's shape: base64 keys may start with a slash)."""
    return _REFERENCE.match(value) is not None and mask_shapes(value) == value


def _credential_like(value: str) -> bool:
    """Could be a password or token, not a subcommand, user name, host or URL
    (`vault login hvs.X`, `bw unlock X`; not `gh auth status`, `docker login host`)."""
    return not (_WORD_ONLY.fullmatch(value) or _HOST.fullmatch(value) or "://" in value
                or _is_reference(value))


def _pairs(text: str, cmd: _Command | None) -> str:
    """NAME=VALUE pairs inside one argument (`-o user=u,password=X`,
    `Server=s;Password=X;`, `username="u" password="X"`)."""
    if "=" not in text:
        return text
    t = cmd.tool if cmd is not None else None

    def one(m: re.Match[str]) -> str:
        name, value = m.group("name"), m.group("value")
        if not (is_secret_name(name) or (t is not None and name in t.secret_names)):
            return m.group(0)
        quote = value[:1] if value[:1] in "\"'" and value[-1:] == value[:1] else ""
        inner = value[1:-1] if quote else value
        masked = _mask_value(inner, _PLAIN, cmd)
        return f"{name}={quote}{masked}{quote}"

    return _PAIR.sub(one, text)


def _raw(text: str) -> str:
    """Masks what an argument shows by itself, whatever its place: headers,
    URL credentials and parameters, JSON pairs, SQL, value-shaped secrets."""
    if not _RAW_SCREEN.search(text):
        return text
    if ":" in text:
        text = _HEADER.sub(_header, text, count=1)
        if "://" in text:
            text = _URL_USERINFO.sub(_mask_group2, text)
            text = _URL_TOKEN.sub(_url_token, text)
        if "'" in text or '"' in text:
            text = _QUOTED_PAIR.sub(_quoted_pair, text)
        elif "@" in text:
            text = _BARE_USERINFO.sub(_mask_group2, text, count=1)
    if "=" in text and ("?" in text or "&" in text or ";" in text):
        text = _PARAM.sub(_param, text)
    if "'" in text and _SQL_HINT.search(text):
        text = _SQL.sub(_mask_group2, text)
    return mask_shapes(text)


# --- command lines inside one argument (sh -c "...", ssh host "...")

_SH_TOKEN = re.compile(
    r"""[^\S\n]*(?:(?P<op>&&|\|\||;;|<<<|[;&|()\n]|\d*[<>]+&?)"""
    r"""|(?P<word>(?:[^\s;&|()<>'"\\]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.|['"])+))""",
    re.S,
)
_UNQUOTE = re.compile(r"""'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)""", re.S)
_DQ_ESCAPE = re.compile(r"""\\([\\"$`])""")
_SAFE = re.compile(r"[\w@%+=:,./*-]+")
_QUOTING = re.compile(r"['\"\\]")
# A word no rule looks at unless it is a verb: short (no token), no = : @ quotes
# spaces, - or _ (set-initial-password, add_user).
_PLAIN_WORD = re.compile(r"[A-Za-z0-9./,+%~^]{1,15}")


def _unquote(raw: str) -> str:
    def part(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return m.group(1)
        if m.group(2) is not None:
            return _DQ_ESCAPE.sub(r"\1", m.group(2))
        return m.group(3)

    return _UNQUOTE.sub(part, raw)


def _requote(old_raw: str, new: str) -> str:
    if _SAFE.fullmatch(new) and old_raw[:1] not in "'\"":
        return new
    if old_raw[:1] == '"' and not _DQ_NEEDS.search(new):
        return f'"{new}"'
    return "'" + new.replace("'", "'\\''") + "'"


_DQ_NEEDS = re.compile(r'[\\"$`]')


def _shell(text: str, depth: int, work: _Work) -> str:
    """A command line given as one argument, split like a shell would and
    redacted command by command; each changed word is put back quoted. Past
    the argv's budget of words, the rest gets only the linear rules."""
    if depth > MAX_DEPTH or work.words <= 0:
        return _raw(_pairs(text, None))  # NAME=VALUE, --name=VALUE, shapes, URLs
    cut = _nth_space(text, work.words)
    if cut < len(text):
        work.words = 0
        return _walk_shell(text[:cut], depth, work) + _raw(_pairs(text[cut:], None))
    work.words -= text.count(" ") + text.count("\n") + 1
    return _walk_shell(text, depth, work)


def _nth_space(text: str, n: int) -> int:
    """The offset of the n-th space or newline in text, or len(text)."""
    spaced = text.replace("\n", " ") if "\n" in text else text
    at = -1
    for _ in range(n):
        at = spaced.find(" ", at + 1)
        if at < 0:
            return len(text)
    return at


def _walk_shell(text: str, depth: int, work: _Work) -> str:
    # segments of (start, end, raw, value), the operator that ends each
    segments: list[tuple[list[tuple[int, int, str, str]], str]] = []
    words: list[tuple[int, int, str, str]] = []
    skip_next = False  # the word after a redirection is a file
    here = -1  # index (in words) of the word after <<<
    heres: dict[int, int] = {}
    for m in _SH_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "op":
            op = m.group("op")
            if op == "<<<":
                here = len(words)
            elif op[-1] in "<>" or (op.endswith("&") and op[0] in "<>0123456789"):
                skip_next = True
            else:
                segments.append((words, op))
                if here >= 0:
                    heres[len(segments) - 1] = here
                words, here = [], -1
        elif kind == "word":
            if skip_next:
                skip_next = False
                continue
            raw = m.group("word")
            value = _unquote(raw) if _QUOTING.search(raw) else raw
            start, end = m.span("word")
            words.append((start, end, raw, value))
    segments.append((words, ""))
    if here >= 0:
        heres[len(segments) - 1] = here
    changes: list[tuple[int, int, str]] = []
    for n, (seg, op) in enumerate(segments):
        if not seg:
            continue
        values = [w[3] for w in seg]
        _walk(values, depth, work)
        stdin_secret = n in heres and _takes_secret_on_stdin(values)
        if stdin_secret:
            values[heres[n]] = MASK
        if op == "|" and n + 1 < len(segments) and segments[n + 1][0] and (
                values[0].rpartition("/")[2] in PRINTERS
                and _takes_secret_on_stdin([w[3] for w in segments[n + 1][0]])):
            keep_user = segments[n + 1][0][0][3].rpartition("/")[2] == "chpasswd"
            for k in range(1, len(values)):
                if not values[k].startswith("-") and "%" not in values[k]:
                    user, sep, _ = values[k].partition(":")
                    values[k] = user + sep + MASK if keep_user and sep else MASK
        for (start, end, raw, old), new in zip(seg, values, strict=True):
            if new != old:
                changes.append((start, end, _requote(raw, new)))
    if changes:
        parts: list[str] = []
        at = 0
        for start, end, new in sorted(changes):
            parts += (text[at:start], new)
            at = end
        parts.append(text[at:])
        text = "".join(parts)
    return _raw(text)


def _takes_secret_on_stdin(words: list[str]) -> bool:
    """`docker login --password-stdin`, `gh auth login --with-token`, `chpasswd`,
    `sudo -S`, `openssl ... -passin stdin` (collector/redact_tools.py STDIN_READERS)."""
    if not words:
        return False
    cmd = words[0].rpartition("/")[2]
    if cmd in STDIN_READERS and STDIN_READERS[cmd] is None:
        return True
    flag = STDIN_READERS.get(cmd)
    for k, w in enumerate(words[1:], 1):
        if w[:1] != "-":
            if w == "stdin" and is_secret_name(words[k - 1]):
                return True
            continue
        if is_secret_on_stdin(w.partition("=")[0]):
            return True
        if flag is not None and (w == flag or (
                len(flag) == 2 and w[1] != "-" and flag[1] in w[1:])):
            return True
    return False


def _looks_like_command(text: str) -> bool:
    first = text.split(None, 1)[0].strip("'\"") if text.strip() else ""
    return (first.rpartition("/")[2] in COMMANDS or first[:1] in ("/", "~")
            or first.startswith("./") or bool(_ASSIGNMENT.match(first)))


# --- patterns

# A NAME=VALUE word: NAME is a variable, property or key name.
_ASSIGNMENT = re.compile(r"[A-Za-z_][\w.\-:/\[\]]*=")
_PROPERTY = re.compile(r"-[DP][A-Za-z]")
_IDENT = re.compile(r"[A-Za-z][\w-]*")
_DOTTED = re.compile(r"[A-Za-z][\w-]*(?:\.[\w-]+)+")  # wifi-sec.psk, 802-1x.password
_PORT_LIKE = re.compile(r"[\d,:.\-/]+")
_HEX_ESCAPE = re.compile(r"[0-9A-Fa-f]{2}")
_WORD_ONLY = re.compile(r"[A-Za-z]+(?:[-_][A-Za-z]+)*")
_HOST = re.compile(r"[\w-]+(?:\.[\w-]+)+(?::\d+)?|[\w.-]+:\d+")
_C_FLAG = re.compile(r"-[a-z]*c$|--command$")
_SPACE = re.compile(r"\s")
# Values that point at a secret instead of holding it.
_REFERENCE = re.compile(r"/|\./|\.\./|~|@|\$\{?\w+\}?$|(?:env|file|fd):|-$|stdin$")
_STRUCTURED = re.compile(r"[,;&\s]\s*[A-Za-z_][\w.\-\[\]]*(?: [A-Za-z_]\w*)?=")
_PAIR = re.compile(
    r"(?:(?<=^)|(?<=[,;&\s]))(?P<name>-{0,2}[A-Za-z_][\w.\-\[\]]*(?: [A-Za-z_]\w*)?)="
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^,;&\s]*)")
_JSON_VALUE = re.compile(r'("[^"]*"\s*:\s*")([^"]*)(")')
_COOKIE_VALUE = re.compile(r"(\b[\w.-]+=)([^;\s]{3,})")
_SLASH_LOGIN = re.compile(r"(?P<user>[\w$#]+/)(?P<pw>[^@\s/]+)(?P<rest>@.*)?$")

_RAW_SCREEN = re.compile(r"[:=@']|[A-Za-z0-9_\-+/.]{16,}")
_HEADER = re.compile(
    r"^(?P<pre>\s*(?:[\w.:/\-]+=)?\s*)(?P<name>[A-Za-z][\w-]*)(?P<colon>\s*:\s*)(?P<value>\S.*)$",
    re.S)
_AUTH_SCHEME = re.compile(
    r"(?i)(?P<scheme>bearer|basic|token|digest|negotiate|ntlm|bot|apikey|api-key|key|sso-key"
    r"|splunk|ssws|genie ?key|oauth|jwt|aws4-hmac-sha256|hmac-sha256)(?P<space>\s+)")
# k=v, k=v (AWS4, Digest); `=(?!=)`: not the padding of a base64 credential
_AUTH_PARAM = re.compile(r"(?P<name>[A-Za-z][\w-]*)=(?!=)(?P<value>\"[^\"]*\"|[^,\s]+)")
# scheme://user:X@ -- X up to the last @ before the path (typed passwords hold # and ?)
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#\s:@]*:)([^/\s]+)(?=@)")
_URL_TOKEN = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#\s:@]+)(?=@)")
_BARE_USERINFO = re.compile(  # domain/user:X@host; X may hold an @, the last one ends it
    r"^([\w.\\/-]+:)([^\s/:]+)(?=@[\w.-]*[A-Za-z0-9](?::\d+)?(?:/\S*)?$)")
_PARAM = re.compile(r"(?P<pre>(?:^|[?&;])(?P<name>[\w.\-\[\]%]+)=)(?P<value>[^&#;,\s]*)")
_QUOTED_PAIR = re.compile(
    r"""(?P<q>["'])(?P<name>[\w.\-]{1,64})(?P=q)\s*:\s*(?P<vq>["'])(?P<value>[^"'\n]*)(?P=vq)""")
_SQL_HINT = re.compile(r"(?i)password|identified")
_SQL = re.compile(
    r"(?i)(\b(?:identified\s+by|password)\s*(?:=\s*)?(?:password\s*\(\s*)?')([^']*)(?=')")


def _mask_group2(m: re.Match[str]) -> str:
    return m.group(1) + (MASK if len(m.group(2)) >= MIN_SECRET else m.group(2))


def _mask_credential(value: str) -> str:
    """An Authorization value: the scheme stays; `k=v, k=v` parameters keep
    their names (AWS4, Digest) and lose the secret ones."""
    m = _AUTH_SCHEME.match(value)
    scheme = m.group(0) if m else ""
    rest = value[len(scheme):]
    if "=" in rest and _AUTH_PARAM.match(rest):
        return scheme + _AUTH_PARAM.sub(
            lambda p: f"{p['name']}={MASK}" if is_secret_name(p["name"], query=True)
            else p.group(0), rest)
    return scheme + MASK


def _header(m: re.Match[str]) -> str:
    name = m.group("name")
    low = name.lower()
    value = m.group("value")
    if low in ("cookie", "set-cookie"):
        masked = _COOKIE_VALUE.sub(_mask_group2, value)
    elif low.endswith("authorization"):
        masked = _mask_credential(value)
    elif is_secret_name(name):
        masked = MASK if len(value) >= MIN_SECRET else value
    else:
        return m.group(0)
    return m.group("pre") + name + m.group("colon") + masked


def _url_token(m: re.Match[str]) -> str:
    user = m.group("user")
    return m.group("pre") + (MASK if looks_like_token(user) else user)


def _param(m: re.Match[str]) -> str:
    value = m.group("value")
    if len(value) < MIN_SECRET or not is_secret_name(m.group("name"), query=True):
        return m.group(0)
    if _is_reference(value):
        return m.group(0)
    return m.group("pre") + MASK


def _quoted_pair(m: re.Match[str]) -> str:
    name, value = m.group("name"), m.group("value")
    if len(value) < MIN_SECRET or not is_secret_name(name, query=True):
        return m.group(0)
    masked = _mask_credential(value) if name.lower().endswith("authorization") else MASK
    return mask_group(m, "value", masked)
