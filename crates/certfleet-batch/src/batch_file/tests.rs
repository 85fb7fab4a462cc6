use super::*;
use certfleet_keys::KeyAlgorithm;

fn opts() -> ParseOptions {
    ParseOptions::default()
}

fn problems(r: Result<BatchFile, BatchFileError>) -> Vec<Diagnostic> {
    match r {
        Err(BatchFileError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn list_form_with_comments_commas_and_spaces() {
    let text = "# fleet\na.example.com www.a.example.com\n\nb.example.org,www.b.example.org  # two\n  C.Example.NET.\n";
    let b = BatchFile::parse_list(text, "list", &opts()).expect("valid");
    assert_eq!(b.format, Format::List);
    let names: Vec<_> = b.certs.iter().map(|c| (c.line, c.names.clone())).collect();
    assert_eq!(
        names,
        [
            (
                2,
                vec!["a.example.com".to_owned(), "www.a.example.com".to_owned()]
            ),
            (
                4,
                vec!["b.example.org".to_owned(), "www.b.example.org".to_owned()]
            ),
            (5, vec!["c.example.net".to_owned()]),
        ]
    );
    assert!(b.warnings.is_empty() && b.skipped.is_empty());
    assert_eq!(b.jobs()[0].spec.source_line, Some(2));
    assert_eq!(b.digest.len(), 64);
}

#[test]
fn every_bad_line_is_reported_and_nothing_starts() {
    let mut lines: Vec<String> = (0..100).map(|i| format!("host{i}.example.com")).collect();
    lines[11] = "bad_name.example.com".into();
    lines[47] = "ok.example.com -leading.example.com".into();
    lines[88] = "192.0.2.1".into();
    let p = problems(BatchFile::parse_list(
        &lines.join("\n"),
        "fleet.txt",
        &opts(),
    ));
    let at: Vec<(usize, Option<usize>)> = p.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(12, Some(1)), (48, Some(16)), (89, Some(1))]);
    assert!(p[0].message.contains("bad_name.example.com"), "{}", p[0]);
    let err = BatchFile::parse_list(&lines.join("\n"), "fleet.txt", &opts()).expect_err("invalid");
    let msg = err.to_string();
    assert!(msg.starts_with("fleet.txt: 3 problem(s):"), "{msg}");
    assert!(
        msg.contains("line 48, column 16: invalid DNS name \"-leading.example.com\""),
        "{msg}"
    );
}

#[test]
fn skip_invalid_keeps_the_good_certificates() {
    let o = ParseOptions {
        skip_invalid: true,
        ..opts()
    };
    let b = BatchFile::parse_list("a.example.com\nbad..example.com\nc.example.com\n", "l", &o)
        .expect("skips");
    assert_eq!(b.certs.len(), 2);
    assert_eq!(b.skipped.len(), 1);
    assert_eq!(b.skipped[0].line, 2);
}

#[test]
fn names_in_two_certificates_are_a_warning() {
    let b = BatchFile::parse_list(
        "a.example.com www.example.com\nwww.example.com\nx.example.com x.example.com\n",
        "l",
        &opts(),
    )
    .expect("valid");
    let w: Vec<(usize, &str)> = b
        .warnings
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(
        w[0],
        (
            2,
            "name www.example.com is also requested by the certificate on line 1"
        )
    );
    assert!(w[1].1.contains("listed twice"), "{w:?}");
}

#[test]
fn identical_certificates_and_shared_directories_are_errors() {
    let p = problems(BatchFile::parse_list(
        "a.example.com\nb.example.com\na.example.com\n",
        "l",
        &opts(),
    ));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 3);
    assert!(
        p[0].message.contains("already requested on line 1"),
        "{}",
        p[0]
    );
}

const GOOD_TOML: &str = r#"
[defaults]
key_algorithm = "es256"
challenge = "dns-01"
dns_plugin = "rfc2136"
output_dir = "/srv/certs"

[[cert]]
names = ["example.com", "www.example.com"]

[[cert]]
names = ["*.example.net"]
key = "file:/keys/net.pem"
profile = "tlsserver"

[[cert]]
names = "plain.example.org alt.example.org"
challenge = "http-01"
"#;

#[test]
fn toml_form_with_defaults() {
    let b = BatchFile::parse(
        GOOD_TOML,
        Format::detect(None, GOOD_TOML),
        "b.toml",
        &opts(),
    )
    .expect("valid");
    assert_eq!(b.format, Format::Toml);
    assert_eq!(b.certs.len(), 3);
    let c0 = &b.certs[0];
    assert_eq!(c0.line, 8);
    assert_eq!(c0.key, Some(KeySource::Generate(KeyAlgorithm::EcP256)));
    assert_eq!(
        (c0.challenge, c0.dns_plugin.as_deref()),
        (Some(Challenge::Dns01), Some("rfc2136"))
    );
    assert_eq!(c0.output_dir.as_deref(), Some(Path::new("/srv/certs")));
    let c1 = &b.certs[1];
    assert!(
        matches!(&c1.key, Some(KeySource::Existing(r)) if r.to_string() == "file:/keys/net.pem")
    );
    assert_eq!(c1.profile.as_deref(), Some("tlsserver"));
    let c2 = &b.certs[2];
    assert_eq!(c2.names, ["plain.example.org", "alt.example.org"]);
    assert_eq!(c2.challenge, Some(Challenge::Http01));
    let job = c1.to_job();
    assert_eq!(
        job.spec.key.as_ref().map(|k| k.as_str()),
        Some("file:/keys/net.pem")
    );
    assert_eq!(job.spec.source_line, Some(11));
}

#[test]
fn toml_problems_all_reported_with_lines() {
    let text = r#"[defaults]
challenge = "tls-alpn-01"

[[cert]]
names = ["ok.example.com", "bad name.example.com"]

[[cert]]
names = ["*.wild.example.com"]
challenge = "http-01"

[[cert]]
names = []
colour = "blue"

[[cert]]
key = "file:/k.pem"
key_algorithm = "rs2048"
names = ["k.example.com"]
"#;
    let p = problems(BatchFile::parse(text, Format::Toml, "b.toml", &opts()));
    let lines: Vec<usize> = p.iter().map(|d| d.line).collect();
    assert_eq!(lines, [2, 5, 7, 12, 13, 17], "{p:#?}");
    assert!(
        p[0].message.contains("unknown challenge \"tls-alpn-01\""),
        "{}",
        p[0]
    );
    assert!(p[1].message.contains("bad name.example.com"), "{}", p[1]);
    assert!(
        p[2].message.contains("needs the dns-01 challenge"),
        "{}",
        p[2]
    );
    assert!(p[3].message.contains("`names` is empty"), "{}", p[3]);
    assert!(p[4].message.contains("unknown key `colour`"), "{}", p[4]);
    assert!(p[5].message.contains("unknown key algorithm"), "{}", p[5]);
}

#[test]
fn toml_syntax_errors_carry_their_line() {
    let text = "[[cert]]\nnames = [\"a.example.com\"]\n\n[[cert]]\nnames = [\"b.example.com\"\n";
    let p = problems(BatchFile::parse(text, Format::Toml, "b.toml", &opts()));
    assert!(!p.is_empty());
    assert!(
        p.iter().all(|d| d.message.starts_with("TOML syntax:")),
        "{p:#?}"
    );
    assert!(p[0].line >= 5, "{p:#?}");
    let o = ParseOptions {
        skip_invalid: true,
        ..opts()
    };
    assert!(
        BatchFile::parse(text, Format::Toml, "b.toml", &o).is_err(),
        "syntax errors are never skipped"
    );
}

#[test]
fn format_detection() {
    assert_eq!(
        Format::detect(Some(Path::new("x.toml")), "a.example"),
        Format::Toml
    );
    assert_eq!(Format::detect(None, "# c\n[[cert]]\n"), Format::Toml);
    assert_eq!(
        Format::detect(None, "# c\na.example b.example\n"),
        Format::List
    );
}

#[test]
fn too_many_names_and_empty_files() {
    let o = ParseOptions {
        max_names: 2,
        ..opts()
    };
    let p = problems(BatchFile::parse_list(
        "a.example b.example c.example\n",
        "l",
        &o,
    ));
    assert!(p[0].message.contains("3 names; at most 2"), "{}", p[0]);
    let p = problems(BatchFile::parse_list("# nothing\n", "l", &opts()));
    assert!(p[0].message.contains("no certificates"));
}

/// Every per-certificate option of `issue` is a field under the same name; `key` takes an
/// algorithm (a new key) or a reference, as `docs/cli.md` shows.
#[test]
fn issue_option_names_are_batch_fields_and_key_takes_an_algorithm() {
    let text = r#"[defaults]
key = "es384"
challenge = "http-01"
profile = "shortlived"
preferred_chain = "Root X2"
out = "/srv/certs"

[[cert]]
names = ["a.example.com"]

[[cert]]
names = ["b.example.com"]
key_alg = "rs3072"
key = "pkcs11:token=t;object=k"
"#;
    let p = problems(BatchFile::parse(text, Format::Toml, "b.toml", &opts()));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].message.contains("either `key` or `key_alg`"),
        "{}",
        p[0]
    );
    let ok = text.replace("key = \"pkcs11:token=t;object=k\"\n", "");
    let b = BatchFile::parse(&ok, Format::Toml, "b.toml", &opts()).expect("valid");
    let (a, bb) = (&b.certs[0], &b.certs[1]);
    assert_eq!(a.key, Some(KeySource::Generate(KeyAlgorithm::EcP384)));
    assert_eq!(bb.key, Some(KeySource::Generate(KeyAlgorithm::Rsa3072)));
    let spec = a.to_job().spec;
    assert_eq!(spec.challenge, Some(Challenge::Http01));
    assert_eq!(spec.profile.as_deref(), Some("shortlived"));
    assert_eq!(spec.preferred_chain.as_deref(), Some("Root X2"));
    assert_eq!(spec.output_dir.as_deref(), Some(Path::new("/srv/certs")));
}

/// Every batch-file example in `docs/cli.md` parses (a doc example that does not is a CI
/// failure; the e2e test `batch_output_dir_gives_each_certificate_its_own_complete_directory`
/// issues the same form).
#[test]
fn the_batch_file_examples_in_the_docs_parse() {
    let doc = include_str!("../../../../docs/cli.md");
    let mut found = 0;
    let mut rest = doc;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        let block = &body[..end];
        rest = &body[end..];
        if !block.contains("[[cert]]") {
            continue;
        }
        found += 1;
        let b = BatchFile::parse(block, Format::Toml, "docs/cli.md", &opts())
            .unwrap_or_else(|e| panic!("docs/cli.md example does not parse: {e}\n{block}"));
        assert_eq!(
            b.certs[0].key,
            Some(KeySource::Generate(KeyAlgorithm::EcP256)),
            "`key = \"es256\"` is a new key, not a file named es256"
        );
    }
    assert!(found > 0, "docs/cli.md has a batch-file example");
}

#[test]
fn pin_values_are_refused_and_never_quoted() {
    let text = "[defaults]\nkey = \"pkcs11:token=t;object=o?module-path=/m.so&pin-value=9753\"\n\n\
                [[cert]]\nnames = [\"a.example\"]\n\n\
                [[cert]]\nnames = [\"b.example\"]\n\
                key = \"pkcs11:token=t;object=p?module-path=/m.so&pin-source=env:PIN\"\n";
    let found = problems(BatchFile::parse(text, Format::Toml, "b.toml", &opts()));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, 2);
    assert!(
        found[0].message.contains("pin-source=file:"),
        "{}",
        found[0].message
    );
    assert!(!found[0].message.contains("9753"), "{}", found[0].message);
}

#[test]
fn deploy_hooks_per_entry_with_a_default_and_no_effect_on_the_digest() {
    let with = "[defaults]\ndeploy_hook = \"reload all\"\n\
                [[cert]]\nnames = [\"a.example.com\"]\n\
                [[cert]]\nnames = [\"b.example.com\"]\ndeploy_hook = \"reload b\"\n\
                [[cert]]\nnames = [\"c.example.com\"]\ndeploy_hook = \"\"\n";
    let b = BatchFile::parse(with, Format::Toml, "b.toml", &opts()).expect("valid");
    let hooks: Vec<Option<&str>> = b.certs.iter().map(|c| c.deploy_hook.as_deref()).collect();
    assert_eq!(hooks, [Some("reload all"), Some("reload b"), None]);
    // The same lines (the jobs record their line) without the hooks.
    let without: String = with
        .lines()
        .map(|l| {
            if l.contains("deploy_hook") {
                "# no hook\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let without = without.as_str();
    let plain = BatchFile::parse(without, Format::Toml, "b.toml", &opts()).expect("valid");
    assert_eq!(b.digest, plain.digest, "hooks do not change the jobs");
    let bad = "[[cert]]\nnames = [\"a.example.com\"]\ndeploy_hook = 3\n";
    let p = problems(BatchFile::parse(bad, Format::Toml, "b.toml", &opts()));
    assert!(
        p[0].message.contains("`deploy_hook` must be a string"),
        "{p:?}"
    );
}
