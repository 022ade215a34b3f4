//! The 5x7 bitmap font plates are printed in. The synthesiser draws with it
//! and the recogniser matches against it, so its design is what makes
//! characters tell apart: zero is slashed to differ from O, D has square
//! corners, I has serifs unlike 1.

/// Glyph grid width in cells.
pub const GLYPH_WIDTH: usize = 5;
/// Glyph grid height in cells.
pub const GLYPH_HEIGHT: usize = 7;

/// One character's bitmap: seven rows, bit 4 of each row is the leftmost cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glyph {
    pub ch: char,
    pub rows: [u8; GLYPH_HEIGHT],
}

impl Glyph {
    /// Whether cell (x, y) is inked; x counts from the left.
    #[inline]
    pub fn ink(&self, x: usize, y: usize) -> bool {
        self.rows[y] >> (GLYPH_WIDTH - 1 - x) & 1 == 1
    }

    /// First and last inked columns. Narrow glyphs (1, I) leave blank columns
    /// at the sides, which the recogniser must know to size the match.
    pub fn ink_columns(&self) -> (usize, usize) {
        let all = self.rows.iter().fold(0, |acc, r| acc | r);
        let first = (0..GLYPH_WIDTH).find(|&x| all >> (GLYPH_WIDTH - 1 - x) & 1 == 1);
        let last = (0..GLYPH_WIDTH)
            .rev()
            .find(|&x| all >> (GLYPH_WIDTH - 1 - x) & 1 == 1);
        (first.unwrap_or(0), last.unwrap_or(GLYPH_WIDTH - 1))
    }
}

/// Every character a plate may contain, in the order of [`GLYPHS`].
pub const CHARSET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

const fn g(ch: char, rows: [u8; GLYPH_HEIGHT]) -> Glyph {
    Glyph { ch, rows }
}

#[rustfmt::skip]
pub const GLYPHS: [Glyph; 36] = [
    g('0', [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110]),
    g('1', [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    g('2', [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111]),
    g('3', [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110]),
    g('4', [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010]),
    g('5', [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110]),
    g('6', [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110]),
    g('7', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000]),
    g('8', [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110]),
    g('9', [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100]),
    g('A', [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
    g('B', [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110]),
    g('C', [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110]),
    g('D', [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100]),
    g('E', [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111]),
    g('F', [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000]),
    g('G', [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111]),
    g('H', [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
    g('I', [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    g('J', [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100]),
    g('K', [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001]),
    g('L', [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111]),
    g('M', [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001]),
    g('N', [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001]),
    g('O', [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
    g('P', [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000]),
    g('Q', [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101]),
    g('R', [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001]),
    g('S', [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110]),
    g('T', [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100]),
    g('U', [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
    g('V', [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
    g('W', [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010]),
    g('X', [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001]),
    g('Y', [0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100]),
    g('Z', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111]),
];

/// The glyph for a plate character, or `None` outside [`CHARSET`].
pub fn glyph(ch: char) -> Option<&'static Glyph> {
    GLYPHS.iter().find(|g| g.ch == ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_charset() {
        assert_eq!(GLYPHS.iter().map(|g| g.ch).collect::<String>(), CHARSET);
        assert!(GLYPHS.iter().all(|g| g.rows.iter().all(|&r| r < 32)));
    }

    /// The recogniser takes a glyph's height from its inked rows and splits
    /// characters at blank columns, so every glyph must reach the top and
    /// bottom rows and have no blank column inside its ink.
    #[test]
    fn glyphs_fill_their_height_and_have_no_inner_gaps() {
        for g in &GLYPHS {
            assert_ne!(g.rows[0], 0, "{} top row blank", g.ch);
            assert_ne!(g.rows[GLYPH_HEIGHT - 1], 0, "{} bottom row blank", g.ch);
            let (first, last) = g.ink_columns();
            for x in first..=last {
                assert!(
                    (0..GLYPH_HEIGHT).any(|y| g.ink(x, y)),
                    "{} column {x}",
                    g.ch
                );
            }
        }
    }

    /// Glyphs of equal ink width must differ in several cells so that noise
    /// or a slightly misplaced cell grid cannot turn one into another.
    #[test]
    fn glyphs_are_well_separated() {
        for (i, a) in GLYPHS.iter().enumerate() {
            for b in &GLYPHS[i + 1..] {
                if a.ink_columns() != b.ink_columns() {
                    continue;
                }
                let diff: u32 = a
                    .rows
                    .iter()
                    .zip(&b.rows)
                    .map(|(x, y)| (x ^ y).count_ones())
                    .sum();
                assert!(
                    diff >= 3,
                    "{} and {} differ in only {diff} cells",
                    a.ch,
                    b.ch
                );
            }
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(glyph('Q').unwrap().ch, 'Q');
        assert!(glyph('q').is_none());
        assert_eq!(glyph('1').unwrap().ink_columns(), (1, 3));
        assert_eq!(glyph('M').unwrap().ink_columns(), (0, 4));
    }
}
