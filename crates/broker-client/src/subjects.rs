//! Subject filters: what a consumer or a count reads.

use std::fmt;

/// One or more subject filters (wildcards allowed); a read yields what
/// matches any of them. The filters must not overlap (the broker refuses
/// overlapping filters on one consumer): e.g. several literal room subjects,
/// or one wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects(Vec<String>);

impl Subjects {
    /// Filters matching any of `subjects`, duplicates removed, in the order
    /// given. `None` if there are none.
    pub fn any<I, S>(subjects: I) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut unique: Vec<String> = Vec::new();
        for subject in subjects {
            let subject = subject.into();
            if !unique.contains(&subject) {
                unique.push(subject);
            }
        }
        (!unique.is_empty()).then_some(Self(unique))
    }

    /// The filters.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// As a consumer configuration wants them: one filter goes in
    /// `filter_subject` (understood by every server version), several in
    /// `filter_subjects` (nats-server ≥ 2.10).
    pub(crate) fn consumer_filters(&self) -> (String, Vec<String>) {
        match self.0.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        }
    }
}

impl From<&str> for Subjects {
    fn from(subject: &str) -> Self {
        Self(vec![subject.to_owned()])
    }
}

impl From<String> for Subjects {
    fn from(subject: String) -> Self {
        Self(vec![subject])
    }
}

impl From<&String> for Subjects {
    fn from(subject: &String) -> Self {
        Self(vec![subject.clone()])
    }
}

impl From<&Subjects> for Subjects {
    fn from(subjects: &Subjects) -> Self {
        subjects.clone()
    }
}

impl fmt::Display for Subjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::Subjects;

    #[test]
    fn one_filter_or_several_without_duplicates() {
        let one = Subjects::from("chat.messages.a");
        assert_eq!(one.consumer_filters(), ("chat.messages.a".into(), vec![]));
        let many = Subjects::any(["a", "b", "a"]).expect("two");
        assert_eq!(
            many.consumer_filters(),
            (String::new(), vec!["a".into(), "b".into()])
        );
        assert_eq!(many.to_string(), "a, b");
        assert_eq!(Subjects::any(["a", "a"]), Some(Subjects::from("a")));
        assert!(Subjects::any(Vec::<String>::new()).is_none());
    }
}
