//! Drawing boards and numbers for people: colours on a terminal, plain text elsewhere.

use std::fmt::Write;

use anstyle::{Ansi256Color, Color, Style};
use zero2048_game::{Board, tile_value};

/// The board as a grid of coloured tiles (when `colour`) or plain numbers.
pub fn board(board: Board, colour: bool) -> String {
    let mut out = String::new();
    for r in 0..4 {
        for c in 0..4 {
            let exponent = board.get(4 * r + c);
            let text = if exponent == 0 { "·".to_string() } else { tile_value(exponent).to_string() };
            if colour {
                let style = tile_style(exponent);
                let _ = write!(out, "{style}{text:^7}{style:#}");
            } else {
                let _ = write!(out, "{text:>7}");
            }
        }
        out.push('\n');
    }
    out
}

fn tile_style(exponent: u8) -> Style {
    // Warm colours rising with the tile, as in the original game; dark text on light tiles.
    const BACKGROUNDS: [u8; 16] =
        [236, 230, 229, 215, 209, 203, 197, 227, 221, 220, 214, 208, 141, 135, 99, 57];
    let background = BACKGROUNDS[exponent as usize & 0xF];
    let foreground = if (1..=2).contains(&exponent) || (7..=10).contains(&exponent) { 235 } else { 255 };
    Style::new()
        .bg_color(Some(Color::Ansi256(Ansi256Color(background))))
        .fg_color(Some(Color::Ansi256(Ansi256Color(foreground))))
        .bold()
}

/// A number with thousands separators.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

/// A rate per second with a unit prefix.
pub fn rate(per_second: f64) -> String {
    match per_second {
        r if r >= 1e9 => format!("{:.2}G", r / 1e9),
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}
