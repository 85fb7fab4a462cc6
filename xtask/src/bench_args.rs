//! The one option parser of the benchmarks: `--name VALUE` numbers and `--flag` switches,
//! unknown options refused with the bench's usage line.

use anyhow::{Context, Result, bail};

/// Walks a bench's arguments.
pub struct BenchArgs<'a> {
    it: std::slice::Iter<'a, String>,
    usage: &'static str,
}

impl<'a> BenchArgs<'a> {
    pub fn new(args: &'a [String], usage: &'static str) -> BenchArgs<'a> {
        BenchArgs {
            it: args.iter(),
            usage,
        }
    }

    /// The next option name, if any.
    pub fn next_option(&mut self) -> Option<&'a str> {
        self.it.next().map(String::as_str)
    }

    /// The value after option `name`.
    pub fn value(&mut self, name: &str) -> Result<&'a str> {
        self.it
            .next()
            .map(String::as_str)
            .with_context(|| format!("{name} needs a value\n{}", self.usage))
    }

    /// The number after option `name`.
    pub fn number<T>(&mut self, name: &str) -> Result<T>
    where
        T: std::str::FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.value(name)?
            .parse()
            .with_context(|| format!("{name}: expected a number"))
    }

    /// The comma-separated list after option `name` (empty items left out).
    pub fn list(&mut self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .value(name)?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The error for an option the bench does not know.
    pub fn unknown(&self, option: &str) -> anyhow::Error {
        anyhow::anyhow!("unknown option `{option}`\n{}", self.usage)
    }

    /// Refuses a zero where at least 1 is needed.
    pub fn at_least_one(&self, name: &str, value: usize) -> Result<()> {
        if value == 0 {
            bail!("{name} must be at least 1\n{}", self.usage);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn numbers_switches_and_unknown_options() {
        let a = args("--runs 3 --no-lego --bogus");
        let mut p = BenchArgs::new(&a, "usage: x");
        assert_eq!(p.next_option(), Some("--runs"));
        assert_eq!(p.number::<usize>("--runs").expect("number"), 3);
        assert_eq!(p.next_option(), Some("--no-lego"));
        let bogus = p.next_option().expect("option");
        assert!(p.unknown(bogus).to_string().contains("`--bogus`"));
        assert_eq!(p.next_option(), None);
        let a = args("--runs x");
        let mut p = BenchArgs::new(&a, "usage: x");
        p.next_option();
        assert!(p.number::<u32>("--runs").is_err());
        let a = args("--runs");
        let mut p = BenchArgs::new(&a, "usage: x");
        p.next_option();
        let e = p.number::<usize>("--runs").expect_err("missing value");
        assert!(e.to_string().contains("usage: x"), "{e}");
        assert!(p.at_least_one("--runs", 0).is_err());
        let a = args("--peers lego,,certbot");
        let mut p = BenchArgs::new(&a, "usage: x");
        p.next_option();
        assert_eq!(p.list("--peers").expect("list"), ["lego", "certbot"]);
    }
}
