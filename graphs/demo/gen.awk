# A deterministic signal: a slow sine with noise from a fixed linear
# congruential generator (awk's rand() differs between implementations),
# and three injected spikes.
BEGIN {
    state = seed
    print "t,value"
    for (t = 0; t < 2000; t++) {
        state = (state * 1103515245 + 12345) % 2147483648
        noise = (state / 2147483648 - 0.5) * 0.8
        v = 2 * sin(t / 50) + noise
        if (t == 400 || t == 1200 || t == 1750) v += 6
        printf "%d,%.4f\n", t, v
    }
}
