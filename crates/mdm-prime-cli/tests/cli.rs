//! Runs the built `mdm-prime` binary: output format and error behaviour of each command.

use std::process::{Command, Output};

fn mdm_prime(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdm-prime"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn subtokens_prints_the_spec_vectors() {
    let o = mdm_prime(&[
        "subtokens",
        "--vocab",
        "50257",
        "--ell",
        "4",
        "--ids",
        "50256,198,0",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("base = 15"), "{out}");
    assert_eq!(
        &lines[1..],
        ["50256 14 13 5 6", "198 0 0 13 3", "0 0 0 0 0"]
    );
}

#[test]
fn subtokens_of_a_text_with_gpt2() {
    let o = mdm_prime(&[
        "subtokens",
        "--text",
        "Hello world",
        "--tokenizer",
        "gpt2",
        "--ell",
        "2",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    // "Hello world" = [15496, 995]; 15496 = 68·225 + 196, 995 = 4·225 + 95.
    assert!(out.contains("15496 68 196\t\"Hello\""), "{out}");
    assert!(out.contains("995 4 95\t\" world\""), "{out}");
}

#[test]
fn subtokens_bad_arguments_fail_clearly_and_print_nothing() {
    for (args, needle) in [
        (
            vec!["--vocab", "300", "--ell", "2", "--ids", "1,300"],
            "out of range",
        ),
        (
            vec!["--vocab", "1", "--ell", "2", "--ids", "0"],
            "at least 2",
        ),
        (
            vec!["--vocab", "300", "--ell", "0", "--ids", "0"],
            "ell = 0",
        ),
        (vec!["--ell", "2", "--ids", "0"], "--vocab"),
        (
            vec!["--tokenizer", "bpe", "--ell", "2", "--text", "hi"],
            "unknown tokenizer",
        ),
        (
            vec![
                "--vocab",
                "7",
                "--tokenizer",
                "bytes",
                "--ell",
                "2",
                "--ids",
                "1",
            ],
            "disagrees",
        ),
    ] {
        let mut full = vec!["subtokens"];
        full.extend(args);
        let o = mdm_prime(&full);
        assert!(!o.status.success(), "{full:?} should fail");
        assert!(stdout(&o).is_empty(), "{full:?} printed {}", stdout(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{full:?}: {err}");
    }
}
