//! The README's settings table, generated from the definitions:
//! `rocket-rides settings-table` prints it, `bins/tests/cli.rs` compares.

use std::collections::BTreeMap;

use clap::CommandFactory;

use super::Cli;

/// One environment variable, as the table shows it.
struct Row {
    flag: String,
    default: String,
    meaning: String,
    commands: Vec<String>,
}

/// The settings table of the README: one section per help heading, naming
/// the commands that read its settings, one row per environment variable.
/// `bins/tests/cli.rs` fails when the README's copy differs.
pub fn settings_table() -> String {
    let cli = Cli::command();
    let mut sections: Vec<(String, BTreeMap<String, Row>, Vec<String>)> = Vec::new();
    let mut add = |heading: &str, arg: &clap::Arg, command: &str| {
        let Some(env) = arg.get_env() else { return };
        if arg.is_hide_set() {
            return;
        }
        let index = match sections.iter().position(|(h, _, _)| h == heading) {
            Some(index) => index,
            None => {
                sections.push((heading.to_owned(), BTreeMap::new(), Vec::new()));
                sections.len() - 1
            }
        };
        let (_, rows, commands) = &mut sections[index];
        if !commands.iter().any(|c| c == command) {
            commands.push(command.to_owned());
        }
        let row = rows
            .entry(env.to_string_lossy().into_owned())
            .or_insert_with(|| Row {
                flag: format!("--{}", arg.get_long().unwrap_or_default()),
                default: describe_default(arg),
                meaning: one_line(arg.get_long_help().or(arg.get_help())),
                commands: Vec::new(),
            });
        row.commands.push(command.to_owned());
    };
    for arg in cli.get_arguments() {
        add("Every command", arg, "");
    }
    for command in cli.get_subcommands() {
        for arg in command.get_arguments() {
            let heading = arg.get_help_heading().unwrap_or("Options");
            add(heading, arg, command.get_name());
        }
    }
    // Which commands read each group, then every setting in one table, in
    // the groups' order.
    let mut out = String::from("| group | read by |\n| --- | --- |\n");
    for (heading, _, commands) in &sections {
        let names: Vec<String> = commands
            .iter()
            .map(|c| match c.is_empty() {
                true => "every command".to_owned(),
                false => format!("`{c}`"),
            })
            .collect();
        out.push_str(&format!("| {heading} | {} |\n", names.join(", ")));
    }
    out.push_str(
        "\n| variable | flag | default | group | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for (heading, rows, commands) in &sections {
        for (env, row) in rows {
            // A variable some commands of its group do not read says which do.
            let only = if row.commands.len() < commands.len() {
                let names: Vec<String> = row.commands.iter().map(|c| format!("`{c}`")).collect();
                format!(" (read by {} only)", names.join(", "))
            } else {
                String::new()
            };
            out.push_str(&format!(
                "| `{env}` | `{}` | {} | {heading} | {}{only} |\n",
                row.flag, row.default, row.meaning
            ));
        }
    }
    out
}

fn describe_default(arg: &clap::Arg) -> String {
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    if defaults.is_empty() {
        "unset".to_owned()
    } else {
        format!("`{}`", defaults.join(","))
    }
}

fn one_line(help: Option<&clap::builder::StyledStr>) -> String {
    help.map(|help| {
        help.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
    })
    .unwrap_or_default()
}
