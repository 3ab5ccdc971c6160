//! The `starmind` command line: clap structs and dispatch to the library (`starmind::*::run`).

use clap::{Parser, Subcommand};
use starmind::{
    bench, chat, configs, eval, export, flash, generate, import, sweep, train, upgrade,
};

#[derive(Parser)]
#[command(
    name = "starmind",
    version,
    about = "Tiny story transformers for the Raspberry Pi Pico (RP2040)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a named config on story text.
    Train(train::Args),
    /// Validation loss and bits per byte of a checkpoint or a model file, with baselines.
    Eval(eval::Args),
    /// List the named model configs with their parameter counts.
    Configs(configs::Args),
    /// Quantize a checkpoint into a flat integer model file (.smb).
    Export(export::Args),
    /// Rewrite a model file of an older format version as the current one (same numbers,
    /// faster kernels).
    Upgrade(upgrade::Args),
    /// Generate text (or token ids) from a model file with the integer engine, or from a
    /// checkpoint with the float model, on this computer.
    Generate(generate::Args),
    /// Import a llama2.c or Hugging Face Llama model as a checkpoint directory.
    Import(import::Args),
    /// Write firmware and model to an RP2040 board (probe-rs), or build a UF2 image.
    Flash(flash::Args),
    /// Measure tokens/s and cycles/token on a board, in the rp2040js emulator or on the host.
    Bench(bench::Args),
    /// Type prompts, read the stories a board (or the emulated board) tells, as it tells them.
    Chat(chat::Args),
    /// Train, export, score and bench every config of a seed study (equal training time each)
    /// and write its report (docs/sweeps/<family>/).
    Sweep(sweep::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Configs(args) => configs::run(args),
        Command::Export(args) => export::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Import(args) => import::run(args),
        Command::Flash(args) => flash::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Sweep(args) => sweep::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`starmind configs | head`): nothing more to say.
        Err(err) if starmind::process::is_broken_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
