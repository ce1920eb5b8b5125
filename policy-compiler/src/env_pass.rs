//! Which variable names a node lets skills receive through `env.pass`.
//!
//! A skill that lists `GITHUB_TOKEN` would otherwise get the caller's
//! token. The node's `ceiling.env_pass_deny` patterns refuse names that look
//! like secrets (built in: `BUILTIN_ENV_PASS_DENY`); `ceiling.env_pass_allow`
//! lets the administrator pass some of them anyway. Precedence: a name
//! matching an allow pattern passes; otherwise a name matching a deny
//! pattern is refused; every other name passes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::node_config::Ceiling;

/// Names that look like secrets, refused unless the administrator allows
/// them: substrings that credentials are named by, and the prefixes of
/// cloud and AI providers' variables.
pub const BUILTIN_ENV_PASS_DENY: &[&str] = &[
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*PASSPHRASE*",
    "*CREDENTIAL*",
    "*API_KEY*",
    "*APIKEY*",
    "*PRIVATE_KEY*",
    "*ACCESS_KEY*",
    "*_KEY",
    "*SESSION*",
    "*AUTH*",
    "*COOKIE*",
    "AWS_*",
    "AZURE_*",
    "GOOGLE_*",
    "GCP_*",
    "GH_*",
    "GITHUB_*",
    "ANTHROPIC_*",
    "OPENAI_*",
];

/// A pattern of variable names: letters, digits, `_` and `*`, which matches
/// any run of characters (none included). Matched regardless of case, so
/// `*TOKEN*` also refuses `github_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvPattern(String);

impl EnvPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches, regardless of case.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(
            self.0.to_ascii_uppercase().as_bytes(),
            name.to_ascii_uppercase().as_bytes(),
        )
    }
}

/// `*`-only glob matching: the last `*` seen absorbs one more byte on each
/// mismatch, so the match is linear in practice and never exponential.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

impl FromStr for EnvPattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty()
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'*')
        {
            return Err(format!(
                "invalid variable name pattern {text:?}: expected letters, digits, underscores and `*` (any run of characters)"
            ));
        }
        Ok(EnvPattern(text.to_owned()))
    }
}

impl TryFrom<String> for EnvPattern {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<EnvPattern> for String {
    fn from(pattern: EnvPattern) -> String {
        pattern.0
    }
}

impl fmt::Display for EnvPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The built-in deny list, parsed.
pub fn builtin_deny() -> Vec<EnvPattern> {
    BUILTIN_ENV_PASS_DENY
        .iter()
        .map(|pattern| pattern.parse().expect("built-in patterns are valid"))
        .collect()
}

/// The deny pattern that keeps `name` from passing on a node with
/// `ceiling`, or `None` when it passes.
pub fn refusing_pattern<'c>(ceiling: &'c Ceiling, name: &str) -> Option<&'c EnvPattern> {
    if ceiling.env_pass_allow.iter().any(|allow| allow.matches(name)) {
        return None;
    }
    ceiling.env_pass_deny.iter().find(|deny| deny.matches(name))
}

/// A name the node refused to pass, and the pattern that refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedEnv {
    pub name: String,
    pub pattern: EnvPattern,
}

impl RefusedEnv {
    pub fn new(name: &str, pattern: &EnvPattern) -> Self {
        RefusedEnv {
            name: name.to_owned(),
            pattern: pattern.clone(),
        }
    }
}

impl fmt::Display for RefusedEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (matches {})", self.name, self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> EnvPattern {
        text.parse().unwrap()
    }

    #[test]
    fn globs_match_whole_names_regardless_of_case() {
        let cases = [
            ("*TOKEN*", "GITHUB_TOKEN", true),
            ("*TOKEN*", "github_token", true),
            ("*TOKEN*", "TOKEN", true),
            ("*TOKEN*", "TOKE", false),
            ("AWS_*", "AWS_SECRET_ACCESS_KEY", true),
            ("AWS_*", "MY_AWS_REGION", false),
            ("*_KEY", "STRIPE_KEY", true),
            ("*_KEY", "KEYBOARD_LAYOUT", false),
            ("*_KEY", "SORT_KEY_ORDER", false),
            ("LANG", "LANG", true),
            ("LANG", "LANGUAGE", false),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "AxxCxxB", false),
            ("*", "", true),
            ("**A", "BA", true),
        ];
        for (glob, name, expected) in cases {
            assert_eq!(pattern(glob).matches(name), expected, "{glob} vs {name}");
        }
    }

    #[test]
    fn patterns_are_validated() {
        for bad in ["", "A-B", "A?", "A B", "[A]"] {
            assert!(bad.parse::<EnvPattern>().is_err(), "{bad:?} accepted");
        }
        assert!(builtin_deny().len() == BUILTIN_ENV_PASS_DENY.len());
    }

    #[test]
    fn the_builtin_list_refuses_common_secrets_and_passes_plain_names() {
        let ceiling = Ceiling::default();
        for secret in [
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AZURE_CLIENT_SECRET",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "DB_PASSWORD",
            "PGPASSWD",
            "SSH_AUTH_SOCK",
            "SESSION_ID",
            "HTTP_COOKIE",
            "SIGNING_PRIVATE_KEY",
            "WEATHER_APIKEY",
            "NPM_TOKEN",
            "STRIPE_KEY",
            "github_token",
        ] {
            assert!(refusing_pattern(&ceiling, secret).is_some(), "{secret} passes");
        }
        for plain in [
            "LANG",
            "TZ",
            "GREETING_STYLE",
            "SKILLBOX_TEST_PASSED",
            "FORECAST_UNITS",
            "KEYBOARD",
        ] {
            assert_eq!(refusing_pattern(&ceiling, plain), None, "{plain} refused");
        }
        assert_eq!(
            refusing_pattern(&ceiling, "GITHUB_TOKEN").map(EnvPattern::as_str),
            Some("*TOKEN*")
        );
    }

    #[test]
    fn allow_wins_over_deny() {
        let ceiling = Ceiling {
            env_pass_allow: vec![pattern("WEATHER_API_KEY"), pattern("MYCORP_*")],
            env_pass_deny: vec![pattern("*KEY*"), pattern("MYCORP_*"), pattern("*")],
            ..Ceiling::default()
        };
        assert_eq!(refusing_pattern(&ceiling, "WEATHER_API_KEY"), None);
        assert_eq!(refusing_pattern(&ceiling, "MYCORP_SECRET"), None);
        assert_eq!(
            refusing_pattern(&ceiling, "OTHER_API_KEY").map(EnvPattern::as_str),
            Some("*KEY*")
        );
        // `*` in the deny list makes the allow list the only way through.
        assert_eq!(
            refusing_pattern(&ceiling, "LANG").map(EnvPattern::as_str),
            Some("*")
        );
    }
}
