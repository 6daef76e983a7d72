fn main() { eprintln!("runta CLI: under construction"); std::process::exit(2) }
