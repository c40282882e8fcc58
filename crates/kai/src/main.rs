fn main() {
    std::process::exit(kai::cli::main());
}
