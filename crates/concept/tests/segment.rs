use lcm_concept::segment::segment;

#[test]
fn eyeball() {
    for t in [
        "Mr. Smith went to Washington. He met Dr. Jones, e.g. at St. Mary's. They talked etc. and left.",
        "J. R. R. Tolkien wrote it. So did I. Then we left. By I. M. Pei.",
        "The U.S. Army arrived. No. 5 is next. No. That is wrong.",
        "Pi is 3.14 and it costs $1,000.50 today. Version 1.2.3 shipped.",
        "Wait... what? Wait... What?",
        "He said \"Stop.\" Then he left.",
        "Il a dit « Bonjour. » Puis il est parti. M. Dupont et Mme Martin sont là.",
        "Am 3. Oktober 2020 feiern wir. Das ist z.B. Berlin. Siehe Nr. 5 bzw. Nr. 6. Er sagte: „Hallo.“ Dann ging er.",
        "El Sr. García y la Sra. López llegaron. ¿Vienes? ¡Claro! Hay frutas, p.ej. Manzanas.",
        "Он приехал в г. Москва в 1990 г. и остался. А. С. Пушкин родился в Москве. Это т.е. Москва. Он сказал: «Привет.» Потом ушёл.",
        "今天天气很好。我们去公园吧！你觉得呢？",
        "今日は晴れです。明日は雨でしょう。「本当に？」と彼は聞いた。これはペンです．それは本です．",
        "Shopping list:\n- eggs\n- milk\n- bread",
        "Steps\n1. Open the box\n2. Take it out",
        "First paragraph without period\n\nSecond paragraph",
        "This is a sentence that wraps\nacross two lines. And another.",
        "Introduction\nThe model reads sentences. It predicts the next one.",
        "Hello. ... World.",
        "...",
        "  \n\t ",
        "see https://example.com/search?q=1 now. ok",
        "我们今天去公园\n玩了很久，很开心。",
    ] {
        println!("{:?}\n  -> {:?}", t, segment(t));
    }
}
