//! The Unicode checks behind the author and text rules of `validate`:
//! normalisation, and which characters may be shown to a person, decided by
//! Unicode properties (ICU4X's data, Unicode 18). The rules themselves, and
//! why, are in the docs of `validate`.

use std::fmt;

use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};
use icu_properties::{
    CodePointMapData, CodePointMapDataBorrowed, CodePointSetData, CodePointSetDataBorrowed,
    PropertyNamesLong,
    props::{
        BidiControl, CanonicalCombiningClass, DefaultIgnorableCodePoint, Emoji, EmojiModifier,
        ExtendedPictographic, GeneralCategory, GeneralCategoryGroup, JoiningType, Script,
        WhiteSpace,
    },
    script::ScriptWithExtensions,
};

const CATEGORY: CodePointMapDataBorrowed<'static, GeneralCategory> =
    CodePointMapData::<GeneralCategory>::new();
const JOINING: CodePointMapDataBorrowed<'static, JoiningType> =
    CodePointMapData::<JoiningType>::new();
const COMBINING_CLASS: CodePointMapDataBorrowed<'static, CanonicalCombiningClass> =
    CodePointMapData::<CanonicalCombiningClass>::new();
const BIDI_CONTROL: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<BidiControl>();
const DEFAULT_IGNORABLE: CodePointSetDataBorrowed<'static> =
    CodePointSetData::new::<DefaultIgnorableCodePoint>();
const EMOJI: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<Emoji>();
const EMOJI_MODIFIER: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<EmojiModifier>();
const PICTOGRAPHIC: CodePointSetDataBorrowed<'static> =
    CodePointSetData::new::<ExtendedPictographic>();
const WHITE_SPACE: CodePointSetDataBorrowed<'static> = CodePointSetData::new::<WhiteSpace>();

const ZWNJ: char = '\u{200C}';
const ZWJ: char = '\u{200D}';
const VS15: char = '\u{FE0E}';
const VS16: char = '\u{FE0F}';
/// U+1F3F4 WAVING BLACK FLAG, the base of the subdivision flags (🏴 + tags).
const TAG_BASE: char = '\u{1F3F4}';
const CANCEL_TAG: char = '\u{E007F}';
/// A subdivision code (`gbsct`): a region (2 letters or 3 digits) and 1-4
/// letters or digits.
const MAX_TAG_SPEC: usize = 7;

/// Characters that are letters or symbols by category but draw nothing:
/// U+2800 BRAILLE PATTERN BLANK and U+1D159 MUSICAL SYMBOL NULL NOTEHEAD.
/// (The Hangul fillers U+115F, U+1160, U+3164 and U+FFA0 are
/// default-ignorable, so the property already covers them.)
const BLANK_SYMBOLS: [char; 2] = ['\u{2800}', '\u{1D159}'];

/// UTS #39 §5.4: more nonspacing marks than this on one character are refused.
const MAX_MARKS: usize = 4;

/// What made an author or a text unfit to show; `Display` is the reason
/// sent to the client. A character is named by its code point, never echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Only White_Space.
    Blank,
    /// No character that draws anything (only fillers, blanks, marks).
    NothingVisible,
    /// A C0 or C1 control character (category Cc).
    Control(char),
    /// In a text: a control other than `\n` and `\t`.
    TextControl(char),
    /// U+2028 LINE SEPARATOR or U+2029 PARAGRAPH SEPARATOR.
    Separator(char),
    /// A bidi embedding, override, isolate or (in an author) mark.
    Bidi(char),
    /// A tag character (U+E0000-U+E007F), in a text outside a flag.
    Tag(char),
    /// A format (Cf) or other default-ignorable character: draws nothing.
    Invisible(char),
    /// In a text: a format character that hides or reshapes what follows.
    HiddenFormat(char),
    /// Unassigned in Unicode 18, or a noncharacter.
    Unassigned(char),
    /// A private-use character.
    PrivateUse(char),
    /// A combining mark with nothing before it to combine with.
    LeadingMark(char),
    /// More than [`MAX_MARKS`] nonspacing marks, or one mark twice, on one
    /// character.
    StackedMarks,
    /// Scripts mixed in a way UTS #39 "highly restrictive" refuses.
    MixedScripts(Vec<Script>),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blank => f.write_str("must not be empty or blank"),
            Self::NothingVisible => f.write_str(
                "must contain a visible character, not only blanks, fillers or combining marks",
            ),
            Self::Control(c) => write!(f, "must not contain control characters (found {})", U(*c)),
            Self::TextControl(c) => write!(
                f,
                "must not contain control characters other than line feed and tab (found {})",
                U(*c)
            ),
            Self::Separator(c) => write!(
                f,
                "must not contain line or paragraph separators (found {})",
                U(*c)
            ),
            Self::Bidi(c) => write!(
                f,
                "must not contain bidirectional formatting characters (found {}); \
                 right-to-left scripts need none",
                U(*c)
            ),
            Self::Tag(c) => write!(
                f,
                "must not contain tag characters except in a flag emoji (found {})",
                U(*c)
            ),
            Self::Invisible(c) => write!(
                f,
                "must not contain invisible formatting characters (found {})",
                U(*c)
            ),
            Self::HiddenFormat(c) => write!(
                f,
                "must not contain deprecated or annotation format characters (found {})",
                U(*c)
            ),
            Self::Unassigned(c) => write!(
                f,
                "must not contain unassigned code points or noncharacters (found {})",
                U(*c)
            ),
            Self::PrivateUse(c) => write!(
                f,
                "must not contain private-use characters (found {})",
                U(*c)
            ),
            Self::LeadingMark(c) => {
                write!(f, "must not start with a combining mark (found {})", U(*c))
            }
            Self::StackedMarks => write!(
                f,
                "must not stack more than {MAX_MARKS} combining marks, \
                 or the same mark twice, on one character"
            ),
            Self::MixedScripts(scripts) => {
                let names = PropertyNamesLong::<Script>::new();
                f.write_str("mixes the ")?;
                for (i, script) in scripts.iter().enumerate() {
                    match i {
                        0 => {}
                        _ if i + 1 == scripts.len() => f.write_str(" and ")?,
                        _ => f.write_str(", ")?,
                    }
                    f.write_str(names.get(*script).unwrap_or("unknown"))?;
                }
                f.write_str(
                    " scripts, which can imitate another name; use one script \
                     (or Latin with Chinese, Japanese or Korean)",
                )
            }
        }
    }
}

/// A code point as `U+XXXX`.
struct U(char);

impl fmt::Display for U {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
}

/// `s` in Normalization Form C (canonical composition).
pub(crate) fn nfc(s: String) -> String {
    let normalizer = ComposingNormalizerBorrowed::new_nfc();
    if normalizer.is_normalized(&s) {
        s
    } else {
        normalizer.normalize(&s).into_owned()
    }
}

/// `s` with each `\r\n` and each other `\r` as `\n`.
pub(crate) fn unify_line_ends(s: String) -> String {
    if s.contains('\r') {
        s.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        s
    }
}

/// Checks an author, already in NFC, against the author rules.
pub(crate) fn check_author(author: &str) -> Result<(), Refusal> {
    if author.chars().all(|c| WHITE_SPACE.contains(c)) {
        return Err(Refusal::Blank);
    }
    let chars: Vec<char> = author.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let before = i.checked_sub(1).map(|j| chars[j]);
        if is_tag(c) {
            return Err(Refusal::Tag(c));
        }
        if BIDI_CONTROL.contains(c) {
            return Err(Refusal::Bidi(c));
        }
        match CATEGORY.get(c) {
            GeneralCategory::Control => return Err(Refusal::Control(c)),
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
                return Err(Refusal::Separator(c));
            }
            GeneralCategory::PrivateUse => return Err(Refusal::PrivateUse(c)),
            // A `str` holds no surrogates; the arm is for completeness.
            GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
                return Err(Refusal::Unassigned(c));
            }
            // Format characters draw nothing or act on their neighbours
            // (U+0600 spans the digits after it); only the joiners that
            // names need are kept.
            GeneralCategory::Format if !joiner_allowed(&chars, i) => {
                return Err(Refusal::Invisible(c));
            }
            GeneralCategory::Format => {}
            _ if DEFAULT_IGNORABLE.contains(c) && !variation_selector_allowed(before, c) => {
                return Err(Refusal::Invisible(c));
            }
            _ => {}
        }
    }
    if let Some(&first) = chars.first()
        && GeneralCategoryGroup::Mark.contains(CATEGORY.get(first))
    {
        return Err(Refusal::LeadingMark(first));
    }
    if !author.chars().any(is_visible) {
        return Err(Refusal::NothingVisible);
    }
    if stacks_marks(author) {
        return Err(Refusal::StackedMarks);
    }
    if let Some(scripts) = mixed_scripts(author) {
        return Err(Refusal::MixedScripts(scripts));
    }
    Ok(())
}

/// Checks a text, already with unified line ends and in NFC, against the
/// text rules.
pub(crate) fn check_text(text: &str) -> Result<(), Refusal> {
    if text.chars().all(|c| WHITE_SPACE.contains(c)) {
        return Err(Refusal::Blank);
    }
    // Tag characters seen since a TAG_BASE, or None outside a flag.
    let mut tags: Option<usize> = None;
    let mut before = None;
    for c in text.chars() {
        if is_tag(c) {
            tags = match (tags, c) {
                (Some(n), CANCEL_TAG) if n > 0 => None,
                (Some(n), t) if n < MAX_TAG_SPEC && is_tag_spec(t) => Some(n + 1),
                _ => return Err(Refusal::Tag(c)),
            };
        } else if tags.is_some_and(|n| n > 0) {
            // A flag's tags end with CANCEL TAG, not with another character.
            return Err(Refusal::Tag(before.unwrap_or(c)));
        } else {
            tags = (c == TAG_BASE).then_some(0);
        }
        match c {
            '\n' | '\t' => {}
            '\u{2028}' | '\u{2029}' => return Err(Refusal::Separator(c)),
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => return Err(Refusal::Bidi(c)),
            '\u{206A}'..='\u{206F}' | '\u{FFF9}'..='\u{FFFB}' => {
                return Err(Refusal::HiddenFormat(c));
            }
            _ if CATEGORY.get(c) == GeneralCategory::Control => {
                return Err(Refusal::TextControl(c));
            }
            _ => {}
        }
        before = Some(c);
    }
    if let (Some(n), Some(last)) = (tags, before)
        && n > 0
    {
        return Err(Refusal::Tag(last));
    }
    if !text.chars().any(is_visible) {
        return Err(Refusal::NothingVisible);
    }
    Ok(())
}

fn is_tag(c: char) -> bool {
    ('\u{E0000}'..=CANCEL_TAG).contains(&c)
}

/// A tag digit or tag small letter, as subdivision codes are written.
fn is_tag_spec(c: char) -> bool {
    matches!(c, '\u{E0030}'..='\u{E0039}' | '\u{E0061}'..='\u{E007A}')
}

/// Whether a character draws something: a letter, number, punctuation or
/// symbol that is not white space or one of [`BLANK_SYMBOLS`].
fn is_visible(c: char) -> bool {
    let category = CATEGORY.get(c);
    (GeneralCategoryGroup::Letter.contains(category)
        || GeneralCategoryGroup::Number.contains(category)
        || GeneralCategoryGroup::Punctuation.contains(category)
        || GeneralCategoryGroup::Symbol.contains(category))
        && !WHITE_SPACE.contains(c)
        && !DEFAULT_IGNORABLE.contains(c)
        && !BLANK_SYMBOLS.contains(&c)
}

/// Whether the zero-width (non-)joiner at `chars[i]` is where a name needs
/// one: ZWJ inside an emoji ZWJ sequence (👩‍💻); ZWJ or ZWNJ after a virama
/// (Indic conjuncts), or ZWNJ between joining letters (Persian), as the
/// CONTEXTJ rules of RFC 5892 (IDNA) allow. Every other format character
/// is refused.
fn joiner_allowed(chars: &[char], i: usize) -> bool {
    let c = chars[i];
    let before = i.checked_sub(1).map(|j| chars[j]);
    let after = chars.get(i + 1).copied();
    let after_virama =
        before.is_some_and(|b| COMBINING_CLASS.get(b) == CanonicalCombiningClass::Virama);
    match c {
        ZWJ => {
            let emoji_before = before.is_some_and(|b| {
                b == VS16 || PICTOGRAPHIC.contains(b) || EMOJI_MODIFIER.contains(b)
            });
            let emoji_after = after.is_some_and(|a| PICTOGRAPHIC.contains(a));
            after_virama || (emoji_before && emoji_after)
        }
        ZWNJ => after_virama || zwnj_between_joining_letters(chars, i),
        _ => false,
    }
}

/// RFC 5892 A.1: `(L|D) T* ZWNJ T* (R|D)` by Joining_Type.
fn zwnj_between_joining_letters(chars: &[char], i: usize) -> bool {
    let not_transparent = |c: &&char| JOINING.get(**c) != JoiningType::Transparent;
    let left = chars[..i].iter().rev().find(not_transparent);
    let right = chars[i + 1..].iter().find(not_transparent);
    let joins_right = |c: &char| {
        matches!(
            JOINING.get(*c),
            JoiningType::LeftJoining | JoiningType::DualJoining
        )
    };
    let joins_left = |c: &char| {
        matches!(
            JOINING.get(*c),
            JoiningType::RightJoining | JoiningType::DualJoining
        )
    };
    left.is_some_and(joins_right) && right.is_some_and(joins_left)
}

/// VS15 (text style) and VS16 (emoji style) right after an emoji (❤️);
/// every other default-ignorable, other variation selectors included, is
/// refused.
fn variation_selector_allowed(before: Option<char>, c: char) -> bool {
    matches!(c, VS15 | VS16) && before.is_some_and(|b| EMOJI.contains(b))
}

/// UTS #39 §5.4, on the canonical decomposition: more than [`MAX_MARKS`]
/// nonspacing (or enclosing) marks in a row, or the same one twice in a row.
fn stacks_marks(s: &str) -> bool {
    let mut run = 0;
    let mut previous = None;
    for c in DecomposingNormalizerBorrowed::new_nfd().normalize_iter(s.chars()) {
        let category = CATEGORY.get(c);
        if matches!(
            category,
            GeneralCategory::NonspacingMark | GeneralCategory::EnclosingMark
        ) {
            run += 1;
            if run > MAX_MARKS || previous == Some(c) {
                return true;
            }
        } else {
            run = 0;
        }
        previous = Some(c);
    }
    false
}

/// The scripts, in order of appearance, if `s` mixes them in a way the
/// UTS #39 (§5.2) "highly restrictive" level refuses; `None` if it is
/// single-script or Latin with Han and kana, Han and Bopomofo, or Han and
/// Hangul. By Script_Extensions: a character used by several scripts (a
/// Devanagari danda, a CJK mark) fits any of them, and Common and
/// Inherited ones (digits, punctuation, emoji, most marks) fit every script.
fn mixed_scripts(s: &str) -> Option<Vec<Script>> {
    const COMBINATIONS: [&[Script]; 3] = [
        &[
            Script::Latin,
            Script::Han,
            Script::Hiragana,
            Script::Katakana,
        ],
        &[Script::Latin, Script::Han, Script::Bopomofo],
        &[Script::Latin, Script::Han, Script::Hangul],
    ];
    let extensions = ScriptWithExtensions::new();
    // The scripts every character so far belongs to; None: no script yet.
    let mut shared: Option<Vec<Script>> = None;
    let mut covered = [true; COMBINATIONS.len()];
    let mut seen = Vec::new();
    for c in s.chars() {
        let set = extensions.get_script_extensions_val(c);
        if set.contains(&Script::Common) || set.contains(&Script::Inherited) {
            continue;
        }
        let set: Vec<Script> = set.iter().collect();
        shared = Some(match shared {
            None => set.clone(),
            Some(mut shared) => {
                shared.retain(|script| set.contains(script));
                shared
            }
        });
        for (covered, combination) in covered.iter_mut().zip(COMBINATIONS) {
            *covered &= set.iter().any(|script| combination.contains(script));
        }
        let script = match extensions.get_script_val(c) {
            Script::Common | Script::Inherited => set[0],
            script => script,
        };
        if !seen.contains(&script) {
            seen.push(script);
        }
    }
    let single = shared.is_none_or(|shared| !shared.is_empty());
    (!single && !covered.contains(&true)).then_some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(s: &str) -> Result<(), Refusal> {
        check_author(&nfc(s.to_owned()))
    }

    fn text(s: &str) -> Result<(), Refusal> {
        check_text(&nfc(unify_line_ends(s.to_owned())))
    }

    #[test]
    fn nfc_composes_and_keeps_what_is_composed() {
        assert_eq!(nfc("e\u{301}".into()), "\u{e9}");
        assert_eq!(nfc("\u{1100}\u{1161}\u{11A8}".into()), "\u{AC01}");
        assert_eq!(nfc("Ann".into()), "Ann");
        // Singletons become their canonical equivalent: Ohm to Omega.
        assert_eq!(nfc("\u{2126}".into()), "\u{3A9}");
    }

    #[test]
    fn line_ends_become_line_feeds() {
        assert_eq!(unify_line_ends("a\r\nb\rc\n".into()), "a\nb\nc\n");
        assert_eq!(unify_line_ends("\r\r\n".into()), "\n\n");
    }

    #[test]
    fn authors_accepted() {
        for name in [
            "ann",
            "Ann-Marie O'Neill",
            "José",
            "Zoë 🎉",
            "🦀",
            "👩🏽‍💻 dev",
            "🏳️‍🌈",
            "❤️‍🔥",
            "🧑‍🤝‍🧑",
            "1️⃣",
            "🇺🇦",
            "山田太郎",
            "やまだ たろう",
            "Taro 山田",
            "王小明 Wang",
            "김민준",
            "Kim 김민준",
            "陳ㄅㄆ",
            "محمد",
            "محمد ٣",
            "فاطمه\u{200C}زهرا",
            "דוד",
            "Владимир",
            "Ελένη",
            "क्\u{200D}ष",
            "Nguyễn Thị Ánh",
            "ann  bob",
            "\u{3000}ann",
            "J.R.R. Tolkien",
            "ann (she/her) ✨",
            "x Æ A-12",
            "Dr. Müller",
            "Søren Ólafsson",
            "Łukasz Żółć",
            "İsmail Çağlar",
            "Đặng Mạnh",
            "Anne\u{2010}Marie",
            "Anna·Maria",
            "Ђорђе",
            "Αλέξανδρος",
            "ศรีสมร",
            "अंकित",
            "தமிழ்",
            "ქართული",
            "Հայերեն",
            "አማርኛ",
            "ᏣᎳᎩ",
            "艾哈迈德·阿里",
            "ジョン・スミス",
            "ニコニコー",
            "ｱﾝ",
            "金민준",
            "عمران خان",
            "דָּוִד",
            "☕ lover",
            "user①",
        ] {
            assert_eq!(author(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn authors_refused() {
        use Refusal::*;
        let cases: &[(&str, Refusal)] = &[
            ("", Blank),
            (" \u{3000}\u{a0}", Blank),
            ("a\nb", Control('\n')),
            ("a\u{85}b", Control('\u{85}')),
            ("a\u{7f}", Control('\u{7f}')),
            ("ann\u{202E}nimda", Bidi('\u{202E}')),
            ("\u{202A}ann", Bidi('\u{202A}')),
            ("\u{2066}ann\u{2069}", Bidi('\u{2066}')),
            ("ann\u{200E}", Bidi('\u{200E}')),
            ("ann\u{200F}", Bidi('\u{200F}')),
            ("\u{61C}محمد", Bidi('\u{61C}')),
            ("\u{200B}", Invisible('\u{200B}')),
            ("an\u{200B}n", Invisible('\u{200B}')),
            ("\u{FEFF}ann", Invisible('\u{FEFF}')),
            ("\u{3164}", Invisible('\u{3164}')),
            ("ann\u{3164}", Invisible('\u{3164}')),
            ("\u{FFA0}", Invisible('\u{FFA0}')),
            ("\u{115F}\u{1160}", Invisible('\u{115F}')),
            ("an\u{AD}n", Invisible('\u{AD}')),
            ("a\u{2060}nn", Invisible('\u{2060}')),
            ("a\u{34F}nn", Invisible('\u{34F}')),
            ("a\u{180E}nn", Invisible('\u{180E}')),
            ("ann\u{FE0F}", Invisible('\u{FE0F}')),
            ("ann\u{FE00}", Invisible('\u{FE00}')),
            ("葛\u{E0100}", Invisible('\u{E0100}')),
            ("ann\u{200D}bob", Invisible('\u{200D}')),
            ("🦀\u{200D}", Invisible('\u{200D}')),
            ("a\u{200C}b", Invisible('\u{200C}')),
            ("\u{E0041}\u{E0042}", Tag('\u{E0041}')),
            ("ann\u{E0001}", Tag('\u{E0001}')),
            (
                "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
                Tag('\u{E0067}'),
            ),
            ("ann\u{2028}", Separator('\u{2028}')),
            ("ann\u{2029}", Separator('\u{2029}')),
            ("ann\u{E000}", PrivateUse('\u{E000}')),
            ("ann\u{F0000}", PrivateUse('\u{F0000}')),
            ("ann\u{378}", Unassigned('\u{378}')),
            ("ann\u{FFFF}", Unassigned('\u{FFFF}')),
            ("ann\u{FDD0}", Unassigned('\u{FDD0}')),
            ("\u{2800}", NothingVisible),
            ("\u{2800} \u{2800}", NothingVisible),
            ("\u{1D159}", NothingVisible),
            ("\u{301}", LeadingMark('\u{301}')),
            ("\u{301}ann", LeadingMark('\u{301}')),
            ("\u{20DD}", LeadingMark('\u{20DD}')),
            (" \u{301}", NothingVisible),
            ("a\u{300}\u{301}\u{302}\u{303}\u{304}", StackedMarks),
            ("a\u{301}\u{301}", StackedMarks),
            (
                "p\u{430}ypal",
                MixedScripts(vec![Script::Latin, Script::Cyrillic]),
            ),
            (
                "\u{391}nn",
                MixedScripts(vec![Script::Greek, Script::Latin]),
            ),
            (
                "David דוד",
                MixedScripts(vec![Script::Latin, Script::Hebrew]),
            ),
            (
                "김 たろう",
                MixedScripts(vec![Script::Hangul, Script::Hiragana]),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(author(name).as_ref(), Err(expected), "{name:?}");
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn refusals_name_code_points_not_the_characters() {
        let reason = author("ann\u{202E}").expect_err("bidi").to_string();
        assert!(reason.contains("U+202E"), "{reason}");
        assert!(!reason.contains('\u{202E}'), "{reason}");
        let reason = author("p\u{430}ypal").expect_err("mixed").to_string();
        assert!(reason.contains("Latin and Cyrillic"), "{reason}");
        let reason = author("a\u{1}").expect_err("control").to_string();
        assert_eq!(reason, "must not contain control characters (found U+0001)");
    }

    #[test]
    fn texts_accepted() {
        for t in [
            "hello",
            "line one\nline two\tand a tab",
            "windows\r\nline ends",
            "👩🏽‍💻 ❤️ 🏳️‍🌈 🧑‍🤝‍🧑 1️⃣ 🇺🇦 👍🏿",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F} and 🏴 alone",
            "שלום עולם! hello \u{200F}(1)",
            "\u{200E}left to right mark",
            "مرحبا \u{61C}١٢٣",
            "می\u{200C}خواهم",
            "ภาษา\u{200B}ไทย",
            "soft\u{AD}hyphen and word\u{2060}joiner",
            "private \u{E000} and unassigned \u{378} kept",
            "Zalgo a\u{300}\u{301}\u{302}\u{303}\u{304} is the reader's to clip",
            "漢字かなカナ한국어 mixed freely",
        ] {
            assert_eq!(text(t), Ok(()), "{t:?}");
        }
    }

    #[test]
    fn texts_refused() {
        use Refusal::*;
        let tag_a = '\u{E0061}';
        let cases: &[(&str, Refusal)] = &[
            ("", Blank),
            (" \n\t\r\n", Blank),
            ("\u{200B}", NothingVisible),
            ("\u{3164}\u{3164}", NothingVisible),
            ("\u{2800}", NothingVisible),
            ("nul\0", TextControl('\0')),
            ("bell\u{7}", TextControl('\u{7}')),
            ("escape \u{1b}[2J", TextControl('\u{1b}')),
            ("next line\u{85}", TextControl('\u{85}')),
            ("csi\u{9b}", TextControl('\u{9b}')),
            ("vertical\u{b}tab", TextControl('\u{b}')),
            ("form\u{c}feed", TextControl('\u{c}')),
            ("del\u{7f}", TextControl('\u{7f}')),
            ("line\u{2028}separator", Separator('\u{2028}')),
            ("para\u{2029}separator", Separator('\u{2029}')),
            ("file \u{202E}gpj.exe", Bidi('\u{202E}')),
            ("\u{202A}embedded\u{202C}", Bidi('\u{202A}')),
            ("\u{202B}x", Bidi('\u{202B}')),
            ("\u{202D}x", Bidi('\u{202D}')),
            ("x\u{202C}", Bidi('\u{202C}')),
            ("\u{2067}isolated\u{2069}", Bidi('\u{2067}')),
            ("\u{2068}first strong", Bidi('\u{2068}')),
            ("digits \u{206F}123", HiddenFormat('\u{206F}')),
            (
                "\u{FFF9}annotated\u{FFFA}hidden\u{FFFB}",
                HiddenFormat('\u{FFF9}'),
            ),
            ("hidden\u{E0069}\u{E0067}", Tag('\u{E0069}')),
            ("\u{E0001}\u{E0065}\u{E006E}", Tag('\u{E0001}')),
            ("🏴\u{E007F}", Tag(CANCEL_TAG)),
            ("🏴\u{E0067}\u{E0062}", Tag('\u{E0062}')),
            ("🏴\u{E0067}\u{E0062} x", Tag('\u{E0062}')),
            ("🏴\u{E0047}\u{E0042}\u{E007F}", Tag('\u{E0047}')),
            ("🏴\u{E0020}\u{E007F}", Tag('\u{E0020}')),
            (
                &format!("🏴{}\u{E007F}", String::from(tag_a).repeat(8)),
                Tag(tag_a),
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(text(t).as_ref(), Err(expected), "{t:?}");
        }
    }
}
