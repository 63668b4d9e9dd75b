"""`batch-scheduler completion bash|zsh|fish`: a shell completion script, generated from the parser.

The parser is built from the one option table (core.options), so every sub-command, option and choice
a user can type is completed, and a new option needs nothing here. Install:

    batch-scheduler completion bash > ~/.local/share/bash-completion/completions/batch-scheduler
    batch-scheduler completion zsh > "${fpath[1]}/_batch-scheduler"
    batch-scheduler completion fish > ~/.config/fish/completions/batch-scheduler.fish
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

PROG = "batch-scheduler"
SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]  # every spelling: ("-o", "--output")
    help: str
    takes_value: bool
    choices: tuple[str, ...]
    metavar: str


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    flags: tuple[Flag, ...]
    takes_files: bool  # positional arguments: inputs, a directory


def commands_of(parser: argparse.ArgumentParser) -> list[Command]:
    """Each sub-command with its flags, read from the parser (argparse keeps them in its actions)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return [Command(name, helps.get(name, ""), tuple(flags_of(p)),
                    any(not a.option_strings for a in p._actions))
            for name, p in sub.choices.items()]


def flags_of(parser: argparse.ArgumentParser) -> list[Flag]:
    out = []
    for a in parser._actions:
        if not a.option_strings or a.help == argparse.SUPPRESS:
            continue
        choices = tuple(str(c) for c in a.choices) if a.choices else ()
        metavar = a.metavar if isinstance(a.metavar, str) else ""
        out.append(Flag(tuple(a.option_strings), _one_line(a.help or ""), a.nargs != 0, choices, metavar))
    return out


def _one_line(text: str) -> str:
    text = " ".join(text.replace("%%", "%").split())
    return text if len(text) <= 80 else text[:77] + "..."


def _quote_sh(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash(commands: list[Command], top: list[Flag]) -> str:
    lines = [f"# bash completion for {PROG} (generated: {PROG} completion bash)",
             "_batch_scheduler() {",
             "    local cur prev cmd i",
             '    cur="${COMP_WORDS[COMP_CWORD]}"',
             '    prev="${COMP_WORDS[COMP_CWORD-1]}"',
             '    cmd=""',
             "    for ((i = 1; i < COMP_CWORD; i++)); do",
             '        case "${COMP_WORDS[i]}" in',
             f"            {'|'.join(c.name for c in commands)}) cmd=\"${{COMP_WORDS[i]}}\"; break ;;",
             "        esac",
             "    done",
             '    case "$cmd" in']
    top_words = " ".join(n for f in top for n in f.names)
    lines += ['        "")',
              f'            COMPREPLY=($(compgen -W {_quote_sh(" ".join(c.name for c in commands) + " " + top_words)} '
              '-- "$cur")); return ;;']
    for c in commands:
        lines.append(f"        {c.name})")
        lines.append('            case "$prev" in')
        for f in c.flags:
            if f.choices:
                lines.append(f'                {"|".join(f.names)}) COMPREPLY=($(compgen -W '
                             f'{_quote_sh(" ".join(f.choices))} -- "$cur")); return ;;')
        valued = [n for f in c.flags if f.takes_value and not f.choices for n in f.names]
        if valued:
            lines.append(f'                {"|".join(valued)}) COMPREPLY=($(compgen -f -- "$cur")); return ;;')
        lines.append("            esac")
        words = " ".join(n for f in c.flags for n in f.names)
        lines.append(f'            if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W {_quote_sh(words)} -- "$cur"))')
        lines.append('            else COMPREPLY=($(compgen -f -- "$cur")); fi ;;' if c.takes_files
                     else "            else COMPREPLY=(); fi ;;")
    lines += ["    esac", "}", f"complete -o filenames -F _batch_scheduler {PROG}", ""]
    return "\n".join(lines)


def _zsh_spec(f: Flag) -> str:
    help_ = f.help.replace("\\", "\\\\").replace("]", "\\]").replace("[", "\\[").replace(":", "\\:").replace("'", "'\\''")
    value = ""
    if f.takes_value:
        label = (f.metavar or "value").replace(":", "\\:")
        value = f":{label}:({' '.join(f.choices)})" if f.choices else f":{label}:_files"
    if len(f.names) == 1:
        return f"'{f.names[0]}[{help_}]{value}'"
    return f"'({' '.join(f.names)})'{{{','.join(f.names)}}}'[{help_}]{value}'"


def zsh(commands: list[Command], top: list[Flag]) -> str:
    lines = [f"#compdef {PROG}", f"# zsh completion for {PROG} (generated: {PROG} completion zsh)", "",
             "_batch_scheduler() {", "    local -a commands", "    commands=("]
    for c in commands:
        help_ = c.help.replace(":", "\\:").replace("'", "'\\''")
        lines.append(f"        '{c.name}:{help_}'")
    lines += ["    )", "    _arguments -C \\"]
    lines += [f"        {_zsh_spec(f)} \\" for f in top]
    lines += ["        '1: :->command' \\", "        '*:: :->args'", "    case $state in",
              "        command) _describe 'command' commands ;;", "        args)", "            case $words[1] in"]
    for c in commands:
        specs = [_zsh_spec(f) for f in c.flags] + (["'*:file:_files'"] if c.takes_files else [])
        lines.append(f"                {c.name}) _arguments " + " ".join(specs) + " ;;")
    lines += ["            esac ;;", "    esac", "}", "", '_batch_scheduler "$@"', ""]
    return "\n".join(lines)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(commands: list[Command], top: list[Flag]) -> str:
    names = " ".join(c.name for c in commands)
    lines = [f"# fish completion for {PROG} (generated: {PROG} completion fish)", f"complete -c {PROG} -f"]
    for c in commands:
        lines.append(f"complete -c {PROG} -n 'not __fish_seen_subcommand_from {names}' -a {c.name} "
                     f"-d {_fish_quote(c.help)}")
    for f in top:
        lines.append(f"complete -c {PROG} {_fish_names(f)} -d {_fish_quote(f.help)}")
    for c in commands:
        when = f"-n '__fish_seen_subcommand_from {c.name}'"
        if c.takes_files:
            lines.append(f"complete -c {PROG} {when} -F")
        for f in c.flags:
            value = ""
            if f.takes_value:
                value = f" -x -a {_fish_quote(' '.join(f.choices))}" if f.choices else " -r -F"
            lines.append(f"complete -c {PROG} {when} {_fish_names(f)}{value} -d {_fish_quote(f.help)}")
    return "\n".join(lines) + "\n"


def _fish_names(f: Flag) -> str:
    out = []
    for n in f.names:
        out.append(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}")
    return " ".join(out)


def script(shell: str, parser: argparse.ArgumentParser | None = None) -> str:
    if parser is None:
        from batch_scheduler.commands.parser import build_parser
        parser = build_parser()
    commands = commands_of(parser)
    top = [f for f in flags_of(parser) if f.names != ("-h", "--help")]
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](commands, top)


def main(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return 0
