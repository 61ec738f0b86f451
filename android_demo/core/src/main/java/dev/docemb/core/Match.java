package dev.docemb.core;

/** A template and its cosine to the query. */
public final class Match {
    public final String name;
    public final float score;

    public Match(String name, float score) {
        this.name = name;
        this.score = score;
    }

    @Override
    public String toString() {
        return name + " (" + score + ")";
    }
}
