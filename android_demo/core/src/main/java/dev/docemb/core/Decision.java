package dev.docemb.core;

/** The answer for one photo: the best template, and whether it clears the match threshold. */
public final class Decision {
    public static final String UNKNOWN = "unknown";

    /** Best template, or null when no template is registered. */
    public final Match best;
    public final boolean matched;

    Decision(Match best, boolean matched) {
        this.best = best;
        this.matched = matched;
    }

    /** The template's name when matched, else "unknown". */
    public String label() {
        return matched ? best.name : UNKNOWN;
    }
}
