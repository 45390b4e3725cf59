# Adds a trailing moving average over `window` samples (a CSV of t,value
# becomes t,value,mean).
BEGIN { FS = ","; OFS = "," }
NR == 1 { print $0, "mean"; next }
{
    i = (NR - 2) % window
    sum += $2 - buf[i]
    buf[i] = $2
    n = (NR - 1 < window) ? NR - 1 : window
    printf "%s,%s,%.4f\n", $1, $2, sum / n
}
