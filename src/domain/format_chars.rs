//! Unicode format characters (general category Cf): invisible, yet able to reorder or hide text.

/// Every code point of general category Cf (Unicode 15.1). Kept as a table because the standard
/// library has no category lookup and one small table is cheaper than a dependency; a code point
/// added to Cf later is still refused by the chat sanitizer only once listed here.
const CF_RANGES: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{0600}', '\u{0605}'),   // Arabic number signs
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{06DD}', '\u{06DD}'),   // Arabic end of ayah
    ('\u{070F}', '\u{070F}'),   // Syriac abbreviation mark
    ('\u{0890}', '\u{0891}'),   // Arabic pound/piastre mark above
    ('\u{08E2}', '\u{08E2}'),   // Arabic disputed end of ayah
    ('\u{180E}', '\u{180E}'),   // Mongolian vowel separator
    ('\u{200B}', '\u{200F}'),   // zero-width space/non-joiner/joiner, LRM, RLM
    ('\u{202A}', '\u{202E}'),   // bidi embeddings and overrides
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{2066}', '\u{206F}'),   // bidi isolates, deprecated format characters
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (BOM)
    ('\u{FFF9}', '\u{FFFB}'),   // interlinear annotation
    ('\u{110BD}', '\u{110BD}'), // Kaithi number sign
    ('\u{110CD}', '\u{110CD}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343F}'), // Egyptian hieroglyph format controls
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol format controls
    ('\u{E0001}', '\u{E0001}'), // language tag
    ('\u{E0020}', '\u{E007F}'), // tag characters
];

/// Whether `c` is a Unicode format character (category Cf). Such characters render as nothing but
/// can reverse the order text is shown in (U+202E) or hide what a string contains, so nothing a
/// person typed keeps them when it is shown to another person.
pub fn is_format_char(c: char) -> bool {
    CF_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// `text` without control or format characters: what is shown is what is stored.
pub fn strip_invisible(text: &str) -> String {
    text.chars()
        .filter(|&c| !c.is_control() && !is_format_char(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_isolates_and_zero_width_characters_are_format_characters() {
        for c in [
            '\u{202A}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{200B}',
            '\u{200D}',
            '\u{200F}',
            '\u{2060}',
            '\u{2064}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(is_format_char(c), "{:?}", c);
        }
    }

    #[test]
    fn visible_text_is_not_a_format_character() {
        for c in ['a', 'é', '@', '[', ' ', '\u{00A0}', '✅', '日', '\u{2070}'] {
            assert!(!is_format_char(c), "{:?}", c);
        }
    }

    #[test]
    fn strip_invisible_keeps_visible_text_in_order() {
        assert_eq!(
            strip_invisible("INC-1 \u{202E}evitucexe yb devorppa\u{202C}\t!"),
            "INC-1 evitucexe yb devorppa!"
        );
    }
}
