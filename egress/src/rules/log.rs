//! What a judging rule's nflog prefix says, and how it is read back.
//!
//! Each judging rule of a table gets an index, in the order the rules are
//! added, and its log prefix is `<verdict> #<index>` (for example
//! `deny #7`). The table keeps a [`JudgingRule`] per index, with the same
//! text as the rule's comment, so a reader of the nflog group maps a logged
//! packet back to its verdict and rule. The prefix holds no table name: the
//! group is the sandbox's own (see `nflog`).

use std::net::IpAddr;

use ipnet::IpNet;

use super::Verdict;

/// nft's limit on a log prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 127;

/// One judging rule, as the connection log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgingRule {
    pub verdict: Verdict,
    /// The rule's comment: `<verdict>` or `<verdict>: <detail>`.
    pub text: String,
    /// For a rule matching a set of ranges (the always-deny and deny
    /// sets): each range and the text naming where it comes from.
    pub ranges: Vec<(IpNet, String)>,
}

impl JudgingRule {
    /// The text naming what matched `destination`: the most specific range
    /// containing it, else the rule's comment.
    pub fn describe(&self, destination: IpAddr) -> &str {
        self.ranges
            .iter()
            .filter(|(net, _)| net.contains(&destination))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or(&self.text, |(_, text)| text)
    }
}

/// The log prefix of judging rule `index` with `verdict`.
pub fn log_prefix(verdict: Verdict, index: usize) -> String {
    format!("{verdict} #{index}")
}

/// The verdict text and index in a log prefix; `None` when it is not of
/// the form `<verdict> #<index>` (surrounding spaces aside).
pub fn parse_log_prefix(prefix: &str) -> Option<(&str, usize)> {
    let (verdict, index) = prefix.trim().split_once(" #")?;
    let valid_verdict = !verdict.is_empty() && verdict.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    let valid_index = !index.is_empty() && index.len() <= 9 && index.bytes().all(|b| b.is_ascii_digit());
    if !(valid_verdict && valid_index) {
        return None;
    }
    Some((verdict, index.parse().ok()?))
}

/// The rule among `rules` that logged a packet with `prefix`: its index
/// must exist and its verdict must be the one the prefix names.
pub fn rule_for_prefix<'a>(rules: &'a [JudgingRule], prefix: &str) -> Option<&'a JudgingRule> {
    let (verdict, index) = parse_log_prefix(prefix)?;
    rules
        .get(index)
        .filter(|rule| rule.verdict.to_string() == verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verdict: Verdict, text: &str) -> JudgingRule {
        JudgingRule {
            verdict,
            text: text.to_owned(),
            ranges: Vec::new(),
        }
    }

    #[test]
    fn prefixes_round_trip_and_stay_short() {
        let longest = log_prefix(Verdict::AllowLearned, usize::MAX);
        assert!(longest.len() <= MAX_PREFIX_LEN, "{longest}");
        assert_eq!(log_prefix(Verdict::Deny, 7), "deny #7");
        assert_eq!(parse_log_prefix("deny #7"), Some(("deny", 7)));
        assert_eq!(
            parse_log_prefix(" allow-learned #12 "),
            Some(("allow-learned", 12))
        );
    }

    #[test]
    fn malformed_prefixes_are_refused() {
        for prefix in [
            "",
            "deny",
            "deny #",
            "#3",
            " #3",
            "deny #x",
            "deny #-1",
            "deny #1234567890",
            "Deny #1",
            "deny #1 #2",
            "skillbox-x deny ",
            "deny\0 #1",
        ] {
            assert_eq!(parse_log_prefix(prefix), None, "{prefix:?}");
        }
    }

    #[test]
    fn a_prefix_names_its_rule_only_when_the_verdict_agrees() {
        let rules = [
            rule(Verdict::Inbound, "inbound"),
            rule(Verdict::Deny, "deny: deny_v4"),
        ];
        assert_eq!(rule_for_prefix(&rules, "deny #1"), Some(&rules[1]));
        assert_eq!(rule_for_prefix(&rules, "allow #1"), None);
        assert_eq!(rule_for_prefix(&rules, "deny #2"), None);
    }

    #[test]
    fn the_most_specific_range_names_a_set_match() {
        let mut set = rule(Verdict::AlwaysDeny, "always-deny: always_deny_v4");
        set.ranges = vec![
            (
                "169.254.0.0/16".parse().unwrap(),
                "always-deny: cidr 169.254.0.0/16".into(),
            ),
            (
                "169.254.169.254/32".parse().unwrap(),
                "always-deny: cidr 169.254.169.254/32".into(),
            ),
        ];
        assert_eq!(
            set.describe("169.254.169.254".parse().unwrap()),
            "always-deny: cidr 169.254.169.254/32"
        );
        assert_eq!(
            set.describe("169.254.1.1".parse().unwrap()),
            "always-deny: cidr 169.254.0.0/16"
        );
        assert_eq!(
            set.describe("10.0.0.1".parse().unwrap()),
            "always-deny: always_deny_v4"
        );
    }
}
