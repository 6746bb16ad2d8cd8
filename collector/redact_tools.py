"""What particular tools take as a secret where no name says so (`mysql
-pX`, `sshpass -p X`, `curl -u user:X`, `smbclient -U user%X`, `vault login
X`...), and which tools run a command line given to them (`sh -c`, `ssh host
CMD`, `watch CMD`). collector/redact.py applies these wherever the tool
appears in an argv, so behind any wrapper too (`sudo`, `env`, `xargs`,
`timeout`, `docker exec`, `kubectl exec --`...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class Tool:
    # short flags whose value (next argument, or attached: -wX) is a secret
    value_flags: frozenset[str] = frozenset()
    # whether value_flags also take their value attached (-wX); not for openssl's -keyout
    attached: bool = True
    # ... attached only (`mysql -pX`; mysql's `-p X` prompts and X is the database)
    attached_only: frozenset[str] = frozenset()
    # value_flags count only once this word was seen (`docker login -p`; -p publishes elsewhere)
    after: str | None = None
    # flags whose value is USER<sep>PASSWORD (curl -u user:pw, smbclient -U user%pw)
    userpass: frozenset[str] = frozenset()
    sep: str = ":"
    # flags that name a secret rather than hold one, or take no value (gcloud --secret NAME)
    not_values: frozenset[str] = frozenset()
    # `-c STRING` runs STRING as a shell command line
    shell_flag: bool = False
    # positional arguments with spaces are a command line (ssh host 'cmd', watch 'cmd')
    command_args: bool = False
    # positional NAME VALUE pairs: a NAME that names a secret hides the VALUE (nmcli ... password X)
    pairs: bool = False
    # after WORD (None: the tool itself), the positional arguments at these indexes are secrets
    positional: MappingProxyType[str | None, tuple[int, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    # arguments with these prefixes carry a secret after the prefix (xfreerdp /p:X)
    prefixed: tuple[str, ...] = ()
    # USER/PASSWORD[@DB] as a positional argument (sqlplus)
    slash_login: bool = False
    # with this letter in a short-flag cluster, the last argument is the password (htpasswd -b)
    batch_last: str | None = None
    # names that are secrets with this tool only (vault: secret_id)
    secret_names: frozenset[str] = frozenset()

    def knows(self, flag: str) -> bool:
        """Whether this tool says what `flag` takes (so no guess is made)."""
        return (flag in self.value_flags or flag in self.attached_only
                or flag in self.userpass or flag in self.not_values)


def _flags(*names: str) -> frozenset[str]:
    return frozenset(names)


def _same(tool: Tool, *names: str) -> dict[str, Tool]:
    return dict.fromkeys(names, tool)


_SHELL = Tool(shell_flag=True)
_MYSQL = Tool(attached_only=_flags("-p"))
_LDAP = Tool(value_flags=_flags("-w"))
_MONGO = Tool(value_flags=_flags("-p"))
_SEVENZIP = Tool(attached_only=_flags("-p"))
_ZIP = Tool(value_flags=_flags("-P"))
_SNMP = Tool(value_flags=_flags("-c", "-A", "-X"))
_SMB = Tool(userpass=_flags("-U", "--user"), sep="%")
_LOGIN_P = Tool(value_flags=_flags("-p"), after="login")
_WINDOWS = Tool(value_flags=_flags("-p", "-H"))
_FREERDP = Tool(prefixed=("/p:", "/password:", "/gp:"))
_ORACLE = Tool(slash_login=True)
_HTTPIE = Tool(userpass=_flags("-a", "--auth"))

TOOLS: Final[MappingProxyType[str, Tool]] = MappingProxyType({
    **_same(_SHELL, "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh",
            "su", "runuser", "flock", "script"),
    **_same(Tool(command_args=True), "ssh", "watch", "tmux", "eval", "xterm", "mosh"),
    **_same(_MYSQL, "mysql", "mysqldump", "mysqlimport", "mysqlshow", "mysqlcheck",
            "mysqlpump", "mysqlsh", "mariadb", "mariadb-dump", "mariadb-import",
            "mariadb-show", "mariadb-check"),
    **_same(Tool(attached_only=_flags("-p"), pairs=True), "mysqladmin", "mariadb-admin"),
    "sshpass": Tool(value_flags=_flags("-p")),
    **_same(Tool(value_flags=_flags("-a"), pairs=True), "redis-cli", "keydb-cli",
            "valkey-cli"),
    **_same(_LDAP, "ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapwhoami",
            "ldapcompare", "ldapmodrdn", "ldapexop", "ldapvc"),
    "ldappasswd": Tool(value_flags=_flags("-w", "-s", "-a")),
    **_same(Tool(value_flags=_flags("-P")), "sqlcmd", "bcp", "osql", "mosquitto_pub",
            "mosquitto_sub", "mosquitto_rr"),
    "ipmitool": Tool(value_flags=_flags("-P", "-k", "-y")),
    **_same(_ZIP, "zip", "zipcloak", "unzip", "funzip"),
    **_same(_SEVENZIP, "7z", "7za", "7zr", "7zz", "rar", "unrar"),
    **_same(_MONGO, "mongo", "mongosh", "mongodump", "mongorestore", "mongoexport",
            "mongoimport", "mongostat", "mongotop", "mongofiles", "cqlsh"),
    "ssh-keygen": Tool(value_flags=_flags("-N", "-P")),
    **_same(Tool(value_flags=_flags("-p")), "useradd", "usermod", "twine", "rdesktop",
            "hydra", "medusa", "smbmap"),
    "openssl": Tool(value_flags=_flags("-k", "-K"), attached=False),
    **_same(_LOGIN_P, "docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oc",
            "az", "crane", "regctl"),
    **_same(_WINDOWS, "crackmapexec", "cme", "nxc", "netexec", "evil-winrm"),
    **_same(_SNMP, "snmpwalk", "snmpget", "snmpset", "snmpbulkwalk", "snmpbulkget",
            "snmpgetnext", "snmptable", "snmptrap", "snmpdelta", "snmpstatus"),
    "curl": Tool(userpass=_flags("-u", "--user", "-U", "--proxy-user", "-E", "--cert")),
    **_same(_HTTPIE, "http", "https", "xh", "xhs"),
    "ab": Tool(userpass=_flags("-A", "-P")),
    "etcdctl": Tool(userpass=_flags("--user")),
    "lftp": Tool(userpass=_flags("-u"), sep=","),
    **_same(_SMB, "smbclient", "rpcclient", "smbget", "smbcacls", "smbtree", "smbcquotas",
            "net"),
    **_same(_ORACLE, "sqlplus", "rman", "expdp", "impdp", "exp", "imp", "sqlldr", "dgmgrl"),
    **_same(_FREERDP, "xfreerdp", "xfreerdp3", "wlfreerdp", "sdl-freerdp", "sdl-freerdp3"),
    **_same(Tool(pairs=True), "nmcli", "rclone", "wpa_cli"),
    "vault": Tool(positional=MappingProxyType({"login": (0,)}),
                  secret_names=_flags("secret_id")),
    "wpa_passphrase": Tool(positional=MappingProxyType({None: (1,)})),
    "mc": Tool(positional=MappingProxyType({"set": (3,), "add": (3,)})),
    "rabbitmqctl": Tool(positional=MappingProxyType(
        {"add_user": (1,), "change_password": (1,), "authenticate_user": (1,)})),
    "htpasswd": Tool(batch_last="b"),
    "pulumi": Tool(not_values=_flags("--secret")),
    "gcloud": Tool(not_values=_flags("--secret")),
    "sudo": Tool(not_values=_flags("-p", "--prompt")),  # the prompt, not a password
    "ffmpeg": Tool(not_values=_flags("-pass", "-passlogfile")),  # two-pass encoding
})

# First words that make an argument with spaces a command line (beside the
# tools above, paths and NAME=VALUE prefixes).
COMMANDS: Final = frozenset(TOOLS) | frozenset({
    "cd", "echo", "printf", "cat", "ls", "cp", "mv", "rm", "mkdir", "grep", "egrep", "sed",
    "awk", "find", "tar", "gzip", "git", "kubectl", "python", "python3", "node", "npm",
    "npx", "yarn", "pip", "pip3", "java", "mvn", "gradle", "make", "cmake", "gcc", "go",
    "cargo", "ruby", "perl", "php", "env", "sudo", "doas", "scp", "rsync", "nc", "socat",
    "gpg", "aws", "gcloud", "terraform", "ansible", "ansible-playbook", "consul", "nomad",
    "systemctl", "journalctl", "psql", "pg_dump", "pg_restore", "mount", "tee", "xargs",
    "timeout", "nohup", "nice", "ionice", "time", "export", "source", ".", "exec",
    "set", "for", "if", "while", "until", "case", "test", "[", "sleep", "kill", "wget",
    "jq", "base64", "chpasswd", "passwd", "chmod", "chown", "apt", "apt-get", "dnf",
    "yum", "apk", "kubeadm", "k3s", "gh", "glab", "doctl", "heroku", "fly", "flyctl",
    "stdbuf", "setsid", "chroot", "nsenter", "unshare", "strace", "ltrace", "busybox",
    "command", "builtin", "parallel", "true", "false", "wait",
})
# Commands whose arguments are what they print: `echo X | cmd --password-stdin`.
PRINTERS: Final = frozenset({"echo", "printf"})
# Commands that read a password on standard input (always: None; or with this flag).
STDIN_READERS: Final[MappingProxyType[str, str | None]] = MappingProxyType({
    "chpasswd": None, "kinit": None, "cryptsetup": None, "sudo": "-S",
    "passwd": "--stdin", "smbpasswd": "-s", "htpasswd": "-i",
})
